"""Issue 6 in the RA workflow: restore request to a real SoftHSM unblock; refusals; lost tokens."""
from __future__ import annotations

import logging
import re
import secrets

import pytest
from sqlalchemy import func, select

from ca.errors import Conflict, InvalidInput, NotFound, PermissionDenied, PolicyViolation
from ca.issuance.service import IssueRequest
from ca.ra import approval, restore
from ca.store.models import AuditEvent
from ca.store.models_ra import RaRequest
from ca.store.models_restore import RestoreRequest
from ca.store.models_tokens import KeyDevice, UnblockAuthorisation
from ca.tokens import registry
from ca.tokens import unblock as codes
from tests import factories
from tests.ra.conftest import caller_of, staff_id  # noqa: F401  (a shared fixture)
from tests.tokens.conftest import real_now_clock
from tests.tokens.test_done_when import _dump_all, _pin


def make_device(db, clock, issuance, username="staff.hanoi.1", device_type="TOKEN",
                with_cert=True) -> int:
    """A device in service (`issued`) with a serial and, optionally, a certificate on it."""
    sub = staff_id(db, username)
    cert = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                       csr=factories.csr(factories.key("p256")),
                                       subscriber_id=sub)) if with_cert else None
    now = clock.now()
    with db.transaction() as s:
        dev = registry.register_device(s, holder_id=sub, device_type=device_type,
                                       label="tok-" + secrets.token_hex(3), actor="test", at=now)
        registry.transition(s, dev, "initialised", actor="test", at=now)
        registry.bind_serial(s, dev, secrets.token_hex(8), actor="test", at=now)
        if cert is not None:
            from ca.store.models import Certificate
            cid = s.execute(select(Certificate.id).where(
                Certificate.serial == cert.serial)).scalar_one()
            registry.attach_certificate(s, dev, cid, actor="test", at=now)
        registry.transition(s, dev, "issued", actor="test", at=now)
        return dev.id


def new_restore(db, clock, caller, profiles, sub, device_id) -> int:
    with db.transaction() as s:
        return restore.create(s, clock, caller, subscriber_id=sub, device_id=device_id,
                              profiles=profiles).id


def check_identity(db, clock, caller, rid, method="cccd_in_person"):
    with db.transaction() as s:
        restore.record_identity_check(s, clock, caller, rid, method=method,
                                      note="CCCD 001085123456 đối chiếu tại Sở KH&CN")


def test_restore_end_to_end_on_a_real_softhsm_token(workstation, db, services, caller_of, caplog,
                                                    monkeypatch):
    caplog.set_level(logging.DEBUG)
    ws = workstation
    label = "staff-" + secrets.token_hex(4)
    old_pin, new_pin = _pin(), _pin()
    r = ws.govca("token", "enrol", "--token-label", label, "--subscriber", "staff.hanoi.2",
                 "--pin-file", str(ws.secret_file("pin", old_pin)), "--key", "p256")
    assert r.returncode == 0, r.stderr
    device_id = int(re.search(r"enrolled device (\d+)", r.stdout).group(1))
    ws.staff(label, "wrong-pins", "000000", "12")  # the holder locks it

    clock = real_now_clock()  # the subprocess checks the code's expiry with the system clock
    staff, officer, approver = (caller_of("staff.hanoi.2"), caller_of("ra.hanoi"),
                                caller_of("approver.hanoi"))
    sub = staff_id(db, "staff.hanoi.2")
    rid = new_restore(db, clock, staff, services.profiles, sub, device_id)

    # No approval before the identity check; the requester never approves.
    with pytest.raises(PolicyViolation) as exc:
        approval.approve(db, clock, approver, rid, None)
    assert exc.value.code == "identity_check_required"
    with db.transaction() as s:
        assert s.get(RaRequest, rid).state == "submitted"
    check_identity(db, clock, officer, rid, "video_call")
    with pytest.raises(PermissionDenied):
        approval.approve(db, clock, staff, rid, None)

    req = approval.approve(db, clock, approver, rid, None)
    assert req.state == "done"
    code = req.unblock_code
    assert re.fullmatch(r"([A-Z2-9]{4}-){4}[A-Z2-9]{4}", code)
    with db.transaction() as s:
        row = s.get(RestoreRequest, rid)
        assert row.identity_checked_by == "ra.hanoi" and row.identity_method == "video_call"
        auth = s.get(UnblockAuthorisation, row.authorisation_id)
        assert auth.request_ref == f"request:{rid}" and auth.consumed_at is None
    # Approving again does not hand out another code.
    with pytest.raises(Conflict):
        approval.approve(db, clock, caller_of("operator"), rid, None)

    # The holder unblocks the real token with the code on the workstation and signs.
    r = ws.govca("token", "unblock", "--token-label", label, "--code", code,
                 "--new-pin-file", str(ws.secret_file("new-pin", new_pin)))
    assert r.returncode == 0, r.stderr
    with db.transaction() as s:
        assert s.get(KeyDevice, device_id).state == "restored"
    assert ws.staff(label, "login", new_pin)["ok"] is True
    assert ws.staff(label, "login", old_pin)["code"] == "pin_incorrect"
    again = ws.govca("token", "unblock", "--token-label", label, "--code", code,
                     "--new-pin-file", str(ws.secret_file("pin3", _pin())))
    assert again.returncode == 1 and "already been used" in again.stderr

    # The code and the PINs are nowhere in the database, audit trail or logs.
    dump = _dump_all(db)
    logs = "\n".join(ws.outputs) + "\n".join(rec.getMessage() for rec in caplog.records)
    for secret in (code, code.replace("-", ""), new_pin, old_pin):
        assert secret.encode() not in dump
        assert secret not in logs


def test_refusals_change_nothing(db, clock, services, issuance, caller_of):
    officer, approver = caller_of("ra.hanoi"), caller_of("approver.hanoi")
    dev = make_device(db, clock, issuance)
    sub = staff_id(db, "staff.hanoi.1")
    qn_dev = make_device(db, clock, issuance, "staff.quangninh.1", with_cert=False)
    with db.transaction() as s:
        before = s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    # A device of another subscriber or outside the scope, a bad id, a missing one.
    for bad in (qn_dev, 999999, "1", True, -3):
        with pytest.raises(InvalidInput) as exc:
            new_restore(db, clock, officer, services.profiles, sub, bad)
        assert exc.value.field == "device_id"
    with pytest.raises(NotFound):
        with db.transaction() as s:
            restore.scoped_device(s, officer, qn_dev)
    with db.transaction() as s:
        assert s.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == before
        assert s.execute(select(func.count()).select_from(RestoreRequest)).scalar_one() == 0

    rid = new_restore(db, clock, officer, services.profiles, sub, dev)
    with pytest.raises(Conflict):  # one open restore per device
        new_restore(db, clock, officer, services.profiles, sub, dev)
    for method, at in (("telepathy", None), ("cccd_in_person", "hôm qua"),
                       ("cccd_in_person", "2099-01-01T10:00")):
        with pytest.raises(InvalidInput):
            with db.transaction() as s:
                restore.record_identity_check(s, clock, officer, rid, method=method,
                                              checked_at=at)
    with pytest.raises(NotFound):  # Quảng Ninh cannot see the Hà Nội request
        with db.transaction() as s:
            restore.record_identity_check(s, clock, caller_of("ra.quangninh"), rid,
                                          method="video_call")
    with pytest.raises(PolicyViolation):
        approval.approve(db, clock, approver, rid, None)
    with pytest.raises(PermissionDenied):  # the officer who prepared it
        check_identity(db, clock, officer, rid)
        approval.approve(db, clock, officer, rid, None)
    with db.transaction() as s:
        assert s.get(RaRequest, rid).state == "submitted"
        assert s.execute(select(func.count()).select_from(UnblockAuthorisation)).scalar_one() == 0


def test_two_approvers_where_policy_says(db, clock, services, issuance, caller_of, monkeypatch):
    monkeypatch.setenv(restore.APPROVERS_ENV, "2")
    officer = caller_of("ra.hanoi")
    dev = make_device(db, clock, issuance)
    rid = new_restore(db, clock, officer, services.profiles, staff_id(db, "staff.hanoi.1"), dev)
    check_identity(db, clock, officer, rid)
    first = approval.approve(db, clock, caller_of("approver.hanoi"), rid, None)
    assert first.state == "submitted" and not getattr(first, "unblock_code", None)
    with pytest.raises(PermissionDenied):
        approval.approve(db, clock, caller_of("approver.hanoi"), rid, None)
    done = approval.approve(db, clock, caller_of("operator"), rid, None)
    assert done.state == "done" and done.unblock_code
    with db.transaction() as s:
        assert s.get(KeyDevice, dev).state == "locked"
        assert s.get(RestoreRequest, rid).first_approved_by == "approver.hanoi"


def test_remote_key_pin_reset_with_the_code(db, clock, services, issuance, caller_of):
    from ca.tokens import remote_pin
    officer = caller_of("ra.hanoi")
    dev = make_device(db, clock, issuance, device_type="RSSP", with_cert=False)
    with db.transaction() as s:
        remote_pin.set_initial_pin(s, dev, "482916", actor="test", at=clock.now())
    rid = new_restore(db, clock, officer, services.profiles, staff_id(db, "staff.hanoi.1"), dev)
    check_identity(db, clock, officer, rid)
    code = approval.approve(db, clock, caller_of("approver.hanoi"), rid, None).unblock_code
    remote_pin.reset_pin(db, clock, device_id=dev, code=code, new_pin="730518", actor="user:x")
    remote_pin.verify_pin(db, clock, dev, "730518", actor="user:x")
    with pytest.raises(PermissionDenied):
        remote_pin.verify_pin(db, clock, dev, "482916", actor="user:x")
    with pytest.raises(codes.UnblockRefused):
        remote_pin.reset_pin(db, clock, device_id=dev, code=code, new_pin="640297", actor="x")


def test_lost_token_raises_revoke_requests(db, clock, services, issuance, caller_of):
    dev = make_device(db, clock, issuance, "staff.hanoi.3")
    staff = caller_of("staff.hanoi.3")
    with pytest.raises(NotFound):  # another holder's device
        with db.transaction() as s:
            restore.report_lost(s, clock, caller_of("staff.hanoi.1"), dev,
                                profiles=services.profiles)
    with db.transaction() as s:
        report = restore.report_lost(s, clock, staff, dev, profiles=services.profiles,
                                     note="Đánh rơi trên xe buýt")
    assert len(report.request_ids) == 1
    with db.transaction() as s:
        assert s.get(KeyDevice, dev).state == "lost"
        req = s.get(RaRequest, report.request_ids[0])
        assert (req.type, req.state, req.reason) == ("revoke", "submitted", "keyCompromise")
        serial = req.target_serial
    done = approval.approve(db, clock, caller_of("approver.hanoi"), report.request_ids[0], None)
    assert done.state == "done"
    with db.transaction() as s:
        from ca.store.models import Certificate
        cert = s.execute(select(Certificate).where(Certificate.serial == serial)).scalar_one()
        assert cert.revocation_reason == "keyCompromise"
    with pytest.raises(Exception):  # a lost device is final
        with db.transaction() as s:
            restore.report_lost(s, clock, staff, dev, profiles=services.profiles)
