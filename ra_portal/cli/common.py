"""Shared pieces of the `govca` command line: the root group, error handling, service access."""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import sys
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ca.errors import CAError, HsmUnavailable
from ca.keys import KeySpec
from ca.names import SubjectData

EXIT_ERROR, EXIT_HSM = 1, 3


class CLIError(click.ClickException):
    exit_code = EXIT_ERROR

    def show(self, file=None):
        click.echo(f"govca: error: {self.message}", err=True)


def _app():
    from ra_portal import create_app
    return create_app()


@contextlib.contextmanager
def cli_errors():
    """Expected failures as one line on stderr: CAError -> exit 1, HSM unavailable -> exit 3,
    an unusable database -> exit 1 with what to check."""
    try:
        yield
    except HsmUnavailable as exc:
        err = CLIError(f"HSM unavailable: {exc.message}")
        err.exit_code = EXIT_HSM
        raise err from None
    except CAError as exc:
        raise CLIError(exc.message) from None
    except SQLAlchemyError as exc:
        raise CLIError(f"the database cannot be used ({type(exc).__name__}); check "
                       f"GOVCA_DATABASE_URL and run `govca db upgrade`") from None


def with_services(fn):
    """Run the command inside an app context with the service container; CAError -> stderr."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with cli_errors():
            app = _app()
        with app.app_context():
            svc = app.extensions["govca"]
            try:
                with cli_errors():
                    return fn(svc, *args, **kwargs)
            finally:
                svc.close()
    return wrapper


def core_services():
    """The service container without the Flask app (faster start, e.g. a workstation)."""
    from ra_portal.settings import Settings
    from ra_portal.wiring import build_services
    return build_services(Settings.from_env())


def with_core_services(fn):
    """Like with_services, without building the Flask app."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with cli_errors():
            svc = core_services()
        try:
            with cli_errors():
                return fn(svc, *args, **kwargs)
        finally:
            svc.close()
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """GovCA: certificate authority of the government PKI."""


def read_limited(path: str, limit: int = 64 * 1024, what: str = "file") -> bytes:
    """Read a small input file ('-' = stdin), refusing anything over `limit` bytes."""
    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
        if len(data) > limit:
            raise CLIError(f"the {what} on standard input is over {limit} bytes")
        return data
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > limit:
            raise CLIError(f"{path} is {size} bytes; a {what} is at most {limit} bytes")
        return p.read_bytes()
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None


