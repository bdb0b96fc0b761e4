"""A real GovCA server for relying-party tests: gunicorn on a free loopback port against the
test database and the session's SoftHSM token, with the in-process scheduler."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: bytes | None = None, headers: dict | None = None,
         timeout: float = 10) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Server:
    def __init__(self, *, port: int, database_url: str, hsm_config, instance: Path,
                 workers: int = 2, scheduler_interval: float | None = 1.0,
                 extra_env: dict | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.port, self.base = port, f"http://127.0.0.1:{port}"
        env = dict(os.environ)
        env.update({
            "GOVCA_INSTANCE": str(instance), "GOVCA_DATABASE_URL": database_url,
            "GOVCA_PKCS11_MODULE": hsm_config.module,
            "GOVCA_PKCS11_TOKEN": hsm_config.token_label,
            "GOVCA_PKCS11_PIN_FILE": str(hsm_config.pin_file), "GOVCA_BASE_URL": self.base,
            "GOVCA_PROFILES_FILE": str(instance / "profiles.json"),
        })
        if scheduler_interval is not None:
            env["GOVCA_SCHEDULER"] = "inprocess"
            env["GOVCA_SCHEDULER_INTERVAL"] = str(scheduler_interval)
        else:
            env.pop("GOVCA_SCHEDULER", None)
        env.update(extra_env or {})
        self.log = instance / "server.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
             str(workers), "--chdir", str(ROOT), "--graceful-timeout", "2", *extra_args,
             "wsgi:app"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log.read_text(errors="replace"))
            try:
                if http(self.base + "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not ready:\n" + self.log.read_text(errors="replace"))

    def wait_for(self, path: str, timeout: float = 40) -> bytes:
        """Poll until GET path answers 200 (e.g. the scheduler has published a CRL)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _, body = http(self.base + path, timeout=5)
            if status == 200:
                return body
            time.sleep(0.3)
        raise AssertionError(f"{path} not served within {timeout} s:\n"
                             + self.log.read_text(errors="replace")[-4000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
