"""A real GovCA server for tests: gunicorn (or `govca serve`) on a free loopback port against
the test database and the session's SoftHSM token, logging to a file, stopped with
terminate-then-kill. Shared by tests/crl, tests/deployment, tests/tokens and tests/faults.

    env = govca_env(instance=..., database_url=..., hsm_config=..., base_url=...)
    with GovcaServer(env, log_path=tmp_path / "server.log", port=port) as server:
        http(server.base + "/healthz")
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVE = "from ra_portal.cli import main; main()"  # `govca` without relying on the venv script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: bytes | None = None, headers: dict | None = None,
         timeout: float = 10) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def govca_env(*, instance: Path, database_url: str, hsm_config, base_url: str,
              scheduler_interval: float | None = None, inherit_govca: bool = True,
              extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a test server: this process's environment (without its GOVCA_*
    variables when `inherit_govca` is false), the instance, database, token and base URL, and
    the in-process scheduler every `scheduler_interval` seconds (None: no scheduler)."""
    env = {k: v for k, v in os.environ.items() if inherit_govca or not k.startswith("GOVCA_")}
    env.update({
        "GOVCA_INSTANCE": str(instance), "GOVCA_DATABASE_URL": database_url,
        "GOVCA_PKCS11_MODULE": hsm_config.module, "GOVCA_PKCS11_TOKEN": hsm_config.token_label,
        "GOVCA_PKCS11_PIN_FILE": str(hsm_config.pin_file), "GOVCA_BASE_URL": base_url,
    })
    if scheduler_interval is not None:
        env["GOVCA_SCHEDULER"] = "inprocess"
        env["GOVCA_SCHEDULER_INTERVAL"] = str(scheduler_interval)
    else:
        env["GOVCA_SCHEDULER"] = "off"
    env.update(extra or {})
    return env


class GovcaServer:
    """One server process. `serve=False`: `python -m gunicorn ... wsgi:app` (the options are
    the test's); `serve=True`: `govca serve --listen ... --workers N` (the production command
    line, gunicorn options from GUNICORN_CMD_ARGS). Use as a context manager, or call
    wait_ready() and stop()."""

    def __init__(self, env: Mapping[str, str], *, log_path: Path, port: int | None = None,
                 workers: int = 1, serve: bool = False, extra_args: Sequence[str] = (),
                 cwd: Path | None = ROOT, ready_timeout: float = 60) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.ready_timeout = ready_timeout
        if serve:
            argv = [sys.executable, "-c", SERVE, "serve", "--listen", f"127.0.0.1:{self.port}",
                    "--workers", str(workers), *extra_args]
        else:
            argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}",
                    "--workers", str(workers), "--chdir", str(ROOT), "--graceful-timeout", "2",
                    *extra_args, "wsgi:app"]
        self._log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=self._log,
                                         stderr=subprocess.STDOUT)
        except BaseException:
            self._log.close()
            raise

    # -- life cycle ---------------------------------------------------------------------------
    def wait_ready(self, timeout: float | None = None) -> "GovcaServer":
        """Until GET /healthz answers 200; the log's tail in the error if the process exits or
        never answers."""
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the GovCA server exited ({self.proc.returncode}):\n"
                                   + self.log_tail())
            try:
                if http(self.base + "/healthz", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the GovCA server did not start:\n" + self.log_tail())

    def wait_for(self, path: str, timeout: float = 40) -> bytes:
        """Poll until GET path answers 200 (e.g. the scheduler has published a CRL)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _, body = http(self.base + path, timeout=5)
            if status == 200:
                return body
            time.sleep(0.3)
        raise AssertionError(f"{path} not served within {timeout} s:\n" + self.log_tail())

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM (gunicorn stops its workers gracefully), SIGKILL after `timeout` s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> "GovcaServer":
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the log --------------------------------------------------------------------------------
    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text("utf-8", errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def assert_clean_log(self) -> None:
        """No traceback and no 500 in the log (faults are 503 by design; a 500 is a bug)."""
        text = self.log_text()
        assert "Traceback" not in text and '" 500 ' not in text, text[-3000:]
