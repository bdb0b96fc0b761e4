"""Fixtures for key-device tests: the escrow sealer in the CA token, staff tokens, gateways."""
from __future__ import annotations

import uuid

import pytest

from ca.clock import FixedClock
from tests import serverkit


@pytest.fixture(scope="session")
def sealer(key_store):
    from hsm.escrow import HsmSealer
    s = HsmSealer(key_store.pool)
    s.ensure_key()
    return s


@pytest.fixture(scope="session")
def staff_tokens(softhsm_module, hsm_config):
    """Staff tokens in THIS process: new tokens are initialised on SoftHSM's free slot with
    C_InitToken (visible at once, unlike tokens made by softhsm2-util after start-up)."""
    from hsm.token_ops import StaffToken
    hsm_config.apply_environment()
    return StaffToken(softhsm_module)


@pytest.fixture
def label() -> str:
    return "staff-" + uuid.uuid4().hex[:12]


@pytest.fixture
def gateway(db, clock, issuance, sealer):
    from ca.tokens.gateway import TokenGateway
    return TokenGateway(db, clock, issuance, sealer, actor="officer:test")


def holder_id(db_or_session, username: str = "staff.hanoi.1") -> int:
    """A demo subscriber's id (pass the open session inside a transaction: SQLite has one
    writer, and a second transaction would wait for the first)."""
    from ca.registry import find_subscriber
    if hasattr(db_or_session, "transaction"):
        with db_or_session.transaction() as s:
            return find_subscriber(s, username).id
    return find_subscriber(db_or_session, username).id


def real_now_clock() -> FixedClock:
    """A clock at the real time, for codes checked by a subprocess that uses the system clock."""
    import datetime as dt
    return FixedClock(dt.datetime.now(dt.timezone.utc))


GUNICORN_LOGGING = """
logconfig_dict = {
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                            "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {name: {"level": "DEBUG", "handlers": ["stderr"], "propagate": False}
                for name in ("ca", "ra_portal", "hsm", "crl", "flask.app")},
}
"""


class GovcaServer(serverkit.GovcaServer):
    """`govca serve` (gunicorn, one worker, access log on) on a free loopback port, against the
    test database and the session's CA token; application logs at DEBUG into the same log."""

    def __init__(self, root, env: dict[str, str]) -> None:
        port = serverkit.free_port()
        conf = root / "gunicorn_logging.py"
        conf.write_text(GUNICORN_LOGGING)
        env = {**env, "GOVCA_SCHEDULER": "off", "GOVCA_BASE_URL": f"http://127.0.0.1:{port}",
               "GUNICORN_CMD_ARGS": f"--config {conf} --timeout 120 --no-control-socket"}
        super().__init__(env, log_path=root / "server.log", port=port, workers=1, serve=True,
                         cwd=None, ready_timeout=60)
        self.url = self.base

    def log(self) -> str:
        return self.log_text()


class Workstation:
    """An RA workstation with its own SoftHSM token directory (the staff tokens), talking to
    GovCA (a real `govca serve` on the test database and CA token) over the REST API:
    `govca token enrol/unblock` run as subprocesses with GOVCA_API_URL and an API token."""

    def __init__(self, root, env: dict[str, str], module: str, server: GovcaServer,
                 token_for) -> None:
        self.root, self.env, self.module = root, env, module
        self.server, self.url, self._token_for = server, server.url, token_for
        self._tokens: dict[str, str] = {}
        self.outputs: list[str] = []

    def api_token(self, username: str) -> str:
        if username not in self._tokens:
            self._tokens[username] = self._token_for(username)
        return self._tokens[username]

    def govca(self, *args: str, timeout: float = 90, as_user: str | None = "ra.hanoi",
              env: dict[str, str] | None = None):
        """A `govca` command on the workstation; `token enrol/unblock` reach GovCA over HTTP
        with `as_user`'s API token (None: no URL, GovCA in process)."""
        import subprocess
        import sys
        run_env = dict(self.env)
        if as_user is not None:
            run_env.update({"GOVCA_API_URL": self.url,
                            "GOVCA_API_TOKEN": self.api_token(as_user)})
        run_env.update(env or {})
        r = subprocess.run([sys.executable, "-c", "from ra_portal.cli import main; main()", *args],
                           env=run_env, capture_output=True, text=True, timeout=timeout)
        self.outputs += [r.stdout, r.stderr]
        return r

    def staff(self, label: str, *args: str, timeout: float = 60) -> dict:
        import json
        import subprocess
        import sys
        from pathlib import Path
        script = Path(__file__).with_name("staff_machine.py")
        r = subprocess.run([sys.executable, str(script), self.module, label, *args],
                           env=self.env, capture_output=True, text=True, timeout=timeout)
        self.outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def secret_file(self, name: str, value: str):
        import os
        path = self.root / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
        return path

    def logs(self) -> str:
        """Everything printed on the workstation and by the server (access + app logs)."""
        return "\n".join(self.outputs) + "\n" + self.server.log()


def api_token(db, username: str) -> str:
    """An API token for a demo user, valid at the real time (the server's clock)."""
    from ca.ra.authn import create_token
    return create_token(db, real_now_clock(), username, actor="test").token


def http_json(url: str, token: str | None, method: str, path: str, body: dict | None = None,
              timeout: float = 60) -> tuple[int, dict | None]:
    """One JSON call to the real server (urllib, as the workstation does)."""
    import json
    import urllib.error
    import urllib.request
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body if body is not None else {}).encode()
    req = urllib.request.Request(url + path, data=data if method != "GET" else None,
                                 headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw or b"null")
        except ValueError:
            return e.code, {"raw": raw.decode("utf-8", "replace")}


@pytest.fixture
def server_env() -> dict[str, str]:
    """Extra environment for the GovCA server of `workstation` (override in a test module)."""
    return {}


@pytest.fixture
def workstation(tmp_path, db, hsm_config, softhsm_module, sealer, server_env):
    import os
    from tests.conftest import database_url
    staff = tmp_path / "staff-machine"
    (staff / "tokens").mkdir(parents=True)
    conf = staff / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {staff / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    instance = tmp_path / "instance"
    instance.mkdir()
    # GovCA's side uses the session's CA token (same token directory as the test process).
    (instance / "softhsm2.conf").write_text(hsm_config.softhsm_conf.read_text())
    env = dict(os.environ)
    for name in ("GOVCA_API_URL", "GOVCA_API_TOKEN", "GUNICORN_CMD_ARGS"):
        env.pop(name, None)
    env.update({
        "GOVCA_INSTANCE": str(instance),
        "GOVCA_DATABASE_URL": database_url(tmp_path),
        "GOVCA_PKCS11_MODULE": softhsm_module,
        "GOVCA_TOKEN_MODULE": softhsm_module,
        "GOVCA_PKCS11_TOKEN": hsm_config.token_label,
        "GOVCA_PKCS11_PIN_FILE": str(hsm_config.pin_file),
        "GOVCA_SECRET_KEY_FILE": str(tmp_path / "secret-key"),
        "GOVCA_PROFILES_FILE": str(tmp_path / "no-profiles.json"),
    })
    server = GovcaServer(tmp_path, {**env, "SOFTHSM2_CONF": str(hsm_config.softhsm_conf),
                                    **server_env})
    try:
        server.wait_ready()
        yield Workstation(staff, {**env, "SOFTHSM2_CONF": str(conf)}, softhsm_module, server,
                          lambda username: api_token(db, username))
    finally:
        server.stop()
