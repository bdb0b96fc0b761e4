"""Fixtures for key-device tests: the escrow sealer in the CA token, staff tokens, gateways."""
from __future__ import annotations

import uuid

import pytest

from ca.clock import FixedClock


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


class Workstation:
    """An RA workstation with its own SoftHSM token directory (the staff tokens), talking to the
    test's GovCA (database, CA token) through `govca token ...` run as subprocesses."""

    def __init__(self, root, env: dict[str, str], module: str) -> None:
        self.root, self.env, self.module = root, env, module
        self.outputs: list[str] = []

    def govca(self, *args: str, timeout: float = 60):
        import subprocess
        import sys
        r = subprocess.run([sys.executable, "-c", "from ra_portal.cli import main; main()", *args],
                           env=self.env, capture_output=True, text=True, timeout=timeout)
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


@pytest.fixture
def workstation(tmp_path, db, hsm_config, softhsm_module, sealer):
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
    env.update({
        "SOFTHSM2_CONF": str(conf),
        "GOVCA_INSTANCE": str(instance),
        "GOVCA_DATABASE_URL": database_url(tmp_path),
        "GOVCA_PKCS11_MODULE": softhsm_module,
        "GOVCA_TOKEN_MODULE": softhsm_module,
        "GOVCA_PKCS11_TOKEN": hsm_config.token_label,
        "GOVCA_PKCS11_PIN_FILE": str(hsm_config.pin_file),
        "GOVCA_SECRET_KEY_FILE": str(tmp_path / "secret-key"),
        "GOVCA_PROFILES_FILE": str(tmp_path / "no-profiles.json"),
    })
    return Workstation(staff, env, softhsm_module)
