"""`govca cert revoke|status`, `govca crl ...`, `govca ocsp ...`, `govca scheduler --once`, run as
real processes against the test database and token."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography import x509
from sqlalchemy import select

from ca.store.models import Certificate
from tests.conftest import database_url
from tests.crl.helpers import issue

GOVCA = [sys.executable, "-c", "from ra_portal.cli import main; main()"]


def _run(env, *args):
    return subprocess.run(GOVCA + list(args), env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_cli_revoke_status_crl_ocsp_scheduler(services, hsm_config, tmp_path):
    row = issue(services)
    env = dict(os.environ, GOVCA_INSTANCE=str(tmp_path),
               GOVCA_DATABASE_URL=database_url(tmp_path), GOVCA_PKCS11_MODULE=hsm_config.module,
               GOVCA_PKCS11_TOKEN=hsm_config.token_label,
               GOVCA_PKCS11_PIN_FILE=str(hsm_config.pin_file))
    env.pop("GOVCA_SCHEDULER", None)
    r = _run(env, "scheduler", "--once")
    assert r.returncode == 0, r.stderr
    assert "CRLs published: 4" in r.stdout
    r = _run(env, "cert", "revoke", row.serial, "--reason", "keycompromise",
             "--invalidity-date", "2026-05-30T00:00:00Z")
    assert r.returncode == 0, r.stderr
    assert "(keyCompromise)" in r.stdout and "warning" not in r.stderr
    r = _run(env, "cert", "revoke", row.serial, "--reason", "superseded")
    assert r.returncode == 1 and "already revoked" in r.stderr
    r = _run(env, "cert", "status", row.serial, "--at", "2026-06-01T09:00:00Z")
    assert r.returncode == 0 and "status:   good" in r.stdout, r.stdout + r.stderr
    r = _run(env, "crl", "publish", "--ca", "issuing")
    assert r.returncode == 0 and "full CRL number 3" in r.stdout, r.stdout + r.stderr
    r = _run(env, "crl", "list", "--ca", "issuing")
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["4", "3", "2", "1"]
    out = tmp_path / "now.crl"
    r = _run(env, "crl", "get", "--ca", "issuing", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert x509.load_der_x509_crl(out.read_bytes()).get_revoked_certificate_by_serial_number(
        int(row.serial, 16)) is not None
    r = _run(env, "ocsp", "responder", "--ca", "issuing", "--force")
    assert r.returncode == 0 and "issued" in r.stdout, r.stderr
    r = _run(env, "ocsp", "refresh")
    assert r.returncode == 0 and "answer(s) signed" in r.stdout, r.stderr
    with services.db.transaction() as s:
        stored = s.execute(select(Certificate).where(Certificate.id == row.id)).scalar_one()
        assert stored.revocation_reason == "keyCompromise"
