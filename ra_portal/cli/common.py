"""Shared pieces of the `govca` command line: the root group, error handling, service access."""
from __future__ import annotations

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


def with_services(fn):
    """Run the command inside an app context with the service container; CAError -> stderr."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            app = _app()
        except CAError as exc:
            raise CLIError(exc.message) from None
        with app.app_context():
            svc = app.extensions["govca"]
            try:
                return fn(svc, *args, **kwargs)
            except HsmUnavailable as exc:
                err = CLIError(f"HSM unavailable: {exc.message}")
                err.exit_code = EXIT_HSM
                raise err from None
            except CAError as exc:
                raise CLIError(exc.message) from None
            except SQLAlchemyError as exc:
                raise CLIError(f"the database cannot be used ({type(exc).__name__}); check "
                               f"GOVCA_DATABASE_URL and run `govca db upgrade`") from None
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


