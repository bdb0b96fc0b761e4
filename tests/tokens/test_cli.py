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
