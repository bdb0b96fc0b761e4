"""`govca token` commands as an operator runs them (subprocesses), bad input included."""
from __future__ import annotations

import re

from sqlalchemy import select

from ca.store.models import Certificate
from ca.store.models_tokens import KeyDevice


def test_enrol_bad_input(workstation, db):
    ws = workstation
    # Bad PIN: clear message, nothing registered, token untouched.
    r = ws.govca("token", "enrol", "--token-label", "t-cli", "--subscriber", "staff.hanoi.3",
                 "--pin-file", str(ws.secret_file("weak", "123456")))
    assert r.returncode == 1 and "sequence" in r.stderr and "123456" not in r.stderr
    r = ws.govca("token", "enrol", "--token-label", "t-cli", "--subscriber", "nobody",
                 "--pin-file", str(ws.secret_file("ok", "80246813")))
    assert r.returncode == 1 and "no subscriber" in r.stderr
    with db.transaction() as s:
        assert s.execute(select(KeyDevice)).first() is None
    status = ws.govca("token", "status")
    assert "(uninitialised)" in status.stdout and "t-cli" not in status.stdout
    unblock = ws.govca("token", "unblock", "--code", "AAAA-BBBB-CCCC-DDDD-EEEE",
                       "--new-pin-file", str(ws.secret_file("n", "80246813")))
    assert unblock.returncode == 1 and "--token-label" in unblock.stderr


def test_enrol_list_show_and_lost(workstation, db):
    ws = workstation
    r = ws.govca("token", "enrol", "--token-label", "t-cli", "--subscriber", "staff.hanoi.3",
                 "--pin-file", str(ws.secret_file("ok", "80246813")), "--key", "rsa2048")
    assert r.returncode == 0, r.stderr
    device_id = re.search(r"enrolled device (\d+)", r.stdout).group(1)
    listing = ws.govca("token", "list")
    assert listing.returncode == 0 and "issued" in listing.stdout
    shown = ws.govca("token", "show", device_id)
    assert "state:      issued" in shown.stdout and "certificate" in shown.stdout
    ended = ws.govca("token", "end", device_id, "--state", "lost", "--reason", "stolen bag")
    assert ended.returncode == 0, ended.stderr
    assert "revoked" in ended.stdout
    with db.transaction() as s:
        certs = s.execute(select(Certificate).where(Certificate.revoked_at.isnot(None))).scalars().all()
        assert [c.revocation_reason for c in certs] == ["keyCompromise"]
        assert s.get(KeyDevice, int(device_id)).state == "lost"
    again = ws.govca("token", "end", device_id, "--state", "retired")
    assert again.returncode == 1 and "cannot become" in again.stderr


def test_enrol_in_process_on_the_ca_console(workstation, db, hsm_config):
    """Without --url the command runs GovCA's services itself (the CA's console, whose SoftHSM
    configuration also holds the staff token); the operator named by --actor is audited."""
    from ca.store.models import AuditEvent
    ws = workstation
    label = "t-console"
    r = ws.govca("token", "enrol", "--token-label", label, "--subscriber", "staff.hanoi.4",
                 "--pin-file", str(ws.secret_file("ok", "80246813")), "--key", "p256",
                 "--actor", "operator:console", as_user=None,
                 env={"SOFTHSM2_CONF": str(hsm_config.softhsm_conf)})
    assert r.returncode == 0, r.stderr
    device_id = int(re.search(r"enrolled device (\d+)", r.stdout).group(1))
    with db.transaction() as s:
        assert s.get(KeyDevice, device_id).state == "issued"
        actors = set(s.execute(select(AuditEvent.actor).where(
            AuditEvent.target == f"device:{device_id}")).scalars())
    assert actors == {"operator:console"}
    assert "/api/v1/tokens/" not in ws.server.log()  # nothing went over HTTP
