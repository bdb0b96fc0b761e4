"""Issue 6 done-when: real SoftHSM tokens end to end: `govca token` subprocesses on an RA
workstation talking to a real `govca serve` (gunicorn) over the REST API."""
from __future__ import annotations

import hashlib
import logging
import re
import secrets

import pytest

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, text

from ca.store.base import Base
from ca.store.models import AuditEvent
from ca.store.models_restore import RestoreRequest
from ca.store.models_tokens import KeyDevice, SoPinEscrow, UnblockAuthorisation
from ca.ra import restore
from ca.tokens import escrow, unblock as codes
from hsm.token_ops import CKF_USER_PIN_COUNT_LOW, CKF_USER_PIN_LOCKED
from tests.ra.conftest import caller_of, staff_id  # noqa: F401  (a shared fixture)
from tests.tokens.conftest import http_json, real_now_clock
from tests.tools import openssl_verify, pem


def _pin() -> str:
    """A holder PIN long and random enough that finding it by chance in a dump is impossible."""
    while True:
        pin = "".join(secrets.choice("0123456789") for _ in range(16))
        if len(set(pin)) > 3:
            return pin


def _dump_all(db) -> bytes:
    """Every value of every table, as bytes (text columns UTF-8, binary columns raw)."""
    out = []
    with db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        out.append(bytes(value))
                    elif value is not None:
                        out.append(str(value).encode("utf-8"))
    return b"\n".join(out)


@pytest.fixture
def server_env():
    return {"GOVCA_RESTORE_APPROVERS": "2"}  # policy: two distinct approvers for a restore


def test_enrol_lock_restore_unblock_sign(workstation, db, sealer, caplog, tmp_path, caller_of):
    caplog.set_level(logging.DEBUG)
    ws = workstation
    label = "staff-" + secrets.token_hex(4)
    old_pin, new_pin = _pin(), _pin()

    # 1. Enrol: token initialised with a random SO PIN, key generated on it, certificate issued.
    r = ws.govca("token", "enrol", "--token-label", label, "--subscriber", "staff.hanoi.2",
                 "--pin-file", str(ws.secret_file("pin", old_pin)), "--key", "p256")
    assert r.returncode == 0, r.stderr
    device_id = int(re.search(r"enrolled device (\d+)", r.stdout).group(1))
    with db.transaction() as s:
        dev = s.get(KeyDevice, device_id)
        assert dev.state == "issued" and dev.label == label and dev.serial
        cert_der = s.execute(text(
            "SELECT c.der FROM certificate c JOIN key_device_certificate k "
            "ON k.certificate_id = c.id WHERE k.device_id = :d"), {"d": device_id}).scalar_one()
    cert = x509.load_der_x509_certificate(bytes(cert_der))
    clock = real_now_clock()
    with db.transaction() as s:  # read back as only GovCA can (audited), to search for it later
        first_so_pin = escrow.release_so_pin(s, s.get(KeyDevice, device_id), sealer,
                                             actor="test:auditor", at=clock.now(),
                                             purpose="test search")

    # 2. Lock it with wrong PINs (the holder forgot it).
    locked = ws.staff(label, "wrong-pins", "000000", "12")
    assert set(locked["codes"]) <= {"pin_incorrect", "pin_locked"}
    # Real tokens set CKF_USER_PIN_LOCKED; SoftHSM 2.6 only ever sets CKF_USER_PIN_COUNT_LOW.
    assert locked["flags"] & (CKF_USER_PIN_LOCKED | CKF_USER_PIN_COUNT_LOW)
    assert locked["status"] in ("locked", "count-low")

    # 3. The holder asks for a restore over the API; an officer records the identity check;
    # policy here wants two approvers: the first is recorded, the second releases the code.
    holder = staff_id(db, "staff.hanoi.2")
    st, req = http_json(ws.url, ws.api_token("staff.hanoi.2"), "POST", "/api/v1/requests",
                        {"type": "restore", "subscriber_id": holder, "device_id": device_id})
    assert st == 201 and req["state"] == "submitted", req
    rid = req["id"]
    st, body = http_json(ws.url, ws.api_token("approver.hanoi"), "POST",
                         f"/api/v1/requests/{rid}/approve")
    assert st == 422 and body["error"]["code"] == "identity_check_required", body
    with db.transaction() as s:
        restore.record_identity_check(s, clock, caller_of("ra.hanoi"), rid,
                                      method="cccd_in_person", note="CCCD đối chiếu trực tiếp")
    st, first = http_json(ws.url, ws.api_token("approver.hanoi"), "POST",
                          f"/api/v1/requests/{rid}/approve")
    assert st == 200 and first["state"] == "submitted" and "unblock_code" not in first
    st, body = http_json(ws.url, ws.api_token("approver.hanoi"), "POST",
                         f"/api/v1/requests/{rid}/approve")
    assert st == 403, body  # the same person cannot be both approvers
    st, done = http_json(ws.url, ws.api_token("operator"), "POST",
                         f"/api/v1/requests/{rid}/approve")
    assert st == 200 and done["state"] == "done", done
    code = done["unblock_code"]
    with db.transaction() as s:
        assert s.get(KeyDevice, device_id).state == "locked"
        auth_id = s.get(RestoreRequest, rid).authorisation_id

    # A wrong code is refused and changes nothing.
    bad = ws.govca("token", "unblock", "--token-label", label, "--code", codes.new_code(),
                   "--new-pin-file", str(ws.secret_file("bad-pin", _pin())),
                   as_user="staff.hanoi.2")
    assert bad.returncode == 1 and "not valid" in bad.stderr
    with db.transaction() as s:
        assert s.get(KeyDevice, device_id).state == "locked"

    # 4. The holder unblocks with the code over the API; the new PIN is chosen on the
    # workstation and never sent.
    r = ws.govca("token", "unblock", "--token-label", label, "--code", code,
                 "--new-pin-file", str(ws.secret_file("new-pin", new_pin)),
                 as_user="staff.hanoi.2")
    assert r.returncode == 0, r.stderr
    assert "SO PIN rotated" in r.stderr
    with db.transaction() as s:
        assert s.get(KeyDevice, device_id).state == "restored"
        auth = s.get(UnblockAuthorisation, auth_id)
        assert auth.consumed_at is not None and auth.consumed_by == "user:staff.hanoi.2"

    # 5. Sign with the new PIN: the signature verifies against the issued certificate.
    data = b"Quyet dinh so 123/QD-UBND"
    signed = ws.staff(label, "sign", new_pin, data.hex())
    cert.public_key().verify(bytes.fromhex(signed["signature"]), data, ec.ECDSA(hashes.SHA256()))
    assert bytes(cert_der).hex() in signed["certificates"]
    assert len(signed["certificates"]) == 3  # holder + issuing CA + root
    # The chain written to the token validates the holder's certificate (openssl, independently).
    chain = [x509.load_der_x509_certificate(bytes.fromhex(h)) for h in signed["certificates"]]
    root = next(c for c in chain if c.issuer == c.subject)
    issuing = next(c for c in chain if c.subject == cert.issuer)
    check = openssl_verify(tmp_path, pem(cert), pem(root), pem(issuing))
    assert check.returncode == 0, check.stdout + check.stderr
    assert ws.staff(label, "login", old_pin)["code"] == "pin_incorrect"

    # 6. The code is spent.
    again = ws.govca("token", "unblock", "--token-label", label, "--code", code,
                     "--new-pin-file", str(ws.secret_file("pin3", _pin())),
                     as_user="staff.hanoi.2")
    assert again.returncode == 1 and "already been used" in again.stderr

    # 7. The SO PIN (read back through the audited escrow, as only GovCA can) and the holder's
    # PINs appear nowhere in clear: database, audit trail, logs, command output.
    with db.transaction() as s:
        dev = s.get(KeyDevice, device_id)
        so_pin = escrow.release_so_pin(s, dev, sealer, actor="test:auditor", at=clock.now(),
                                       purpose="test search")
        row = s.execute(select(SoPinEscrow).where(SoPinEscrow.device_id == device_id)).scalar_one()
        assert so_pin.encode() not in row.ciphertext
        audit_text = "\n".join(e.details + e.action + (e.target or "")
                               for e in s.execute(select(AuditEvent)).scalars())
    assert len(so_pin) >= 16 and so_pin != first_so_pin  # the released SO PIN was rotated
    dump = _dump_all(db)
    logs = ws.logs() + "\n".join(r.getMessage() for r in caplog.records)
    # The story went over HTTP: the server's access log has the calls, in the API's name.
    for path in ("/api/v1/tokens/start", "/api/v1/tokens/escrow", "/api/v1/tokens/issue",
                 "/api/v1/tokens/redeem-unblock", "/api/v1/tokens/stage-so-pin",
                 "/api/v1/tokens/unblock-done"):
        assert f"POST {path} HTTP/1.1\" 200" in logs, path
    for secret in (so_pin, first_so_pin, old_pin, new_pin, code, code.replace("-", "")):
        assert secret.encode() not in dump
        assert secret not in audit_text
        assert secret not in logs
    assert hashlib.sha256(so_pin.encode()).hexdigest() not in dump.decode("latin-1")
    for action in ("device.register", "device.escrow.store", "device.unblock.authorise",
                   "device.unblock.redeem", "device.escrow.release", "device.escrow.rotate"):
        assert action in audit_text
