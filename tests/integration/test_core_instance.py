"""The embedded instance end to end, as `make run` builds it: token and PIN files, migrations,
demo CAs, a certificate that openssl verifies; every step idempotent."""
from __future__ import annotations

import os
import stat
import subprocess

from tests import factories
from tests.tools import VENV_BIN, openssl_verify


def _env(instance) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GOVCA_") and k != "SOFTHSM2_CONF"}
    env["GOVCA_INSTANCE"] = str(instance)
    return env


def _govca(env, *args) -> subprocess.CompletedProcess:
    result = subprocess.run([str(VENV_BIN / "govca"), *args], env=env, capture_output=True,
                            timeout=120)
    assert result.returncode == 0, (args, result.stderr.decode())
    assert b"Traceback" not in result.stderr
    return result


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_instance_init_migrate_demo_issue(tmp_path):
    inst = tmp_path / "instance"
    env = _env(inst)
    first = _govca(env, "instance", "init")
    assert b"created SoftHSM token 'govca'" in first.stdout
    pin, so_pin = inst / "hsm-user-pin", inst / "hsm-so-pin"
    assert _mode(inst) == 0o700 and _mode(inst / "softhsm-tokens") == 0o700
    assert _mode(pin) == 0o600 and _mode(so_pin) == 0o600 and _mode(inst / "secret-key") == 0o600
    pin_text = pin.read_text()
    assert pin_text.strip().isdigit()
    # The PIN is never printed.
    assert pin_text.strip().encode() not in first.stdout + first.stderr
    tokens_before = sorted(p.name for p in (inst / "softhsm-tokens").iterdir())

    again = _govca(env, "instance", "init")
    assert b"created" not in again.stdout
    assert pin.read_text() == pin_text
    assert sorted(p.name for p in (inst / "softhsm-tokens").iterdir()) == tokens_before

    # A token without its PIN file is reported, not papered over.
    pin.rename(tmp_path / "pin.bak")
    lost = subprocess.run([str(VENV_BIN / "govca"), "instance", "init"], env=env,
                          capture_output=True, timeout=120)
    assert lost.returncode == 1 and b"Traceback" not in lost.stderr
    assert lost.stderr.decode().startswith("govca: error: token 'govca' exists but its PIN file")
    (tmp_path / "pin.bak").rename(pin)

    assert b"database at revision" in _govca(env, "db", "upgrade").stdout
    demo = _govca(env, "demo", "init")
    assert b"created root CA" in demo.stdout and b"created issuing CA" in demo.stdout

    csr = tmp_path / "req.pem"
    csr.write_bytes(factories.csr())
    issued = _govca(env, "cert", "issue", "--csr", str(csr), "--subscriber", "staff.hanoi.1")
    root = _govca(env, "ca", "show", "root", "--pem").stdout
    issuing = _govca(env, "ca", "show", "issuing", "--pem").stdout
    verify = openssl_verify(tmp_path, issued.stdout, root, issuing)
    assert verify.returncode == 0, verify.stderr
