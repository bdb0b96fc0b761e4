"""The request workflow through the API: issue, renew, change, revoke, restore; the two-person
rule; central approval; exactly one certificate when two approvers race."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from cryptography import x509
from sqlalchemy import func, select

from ca.ra import approval
from ca.ra.roles import Caller
from ca.ra.users import create_user
from ca.store.models import AuditEvent, Certificate
from ca.store.models_ra import RaRequest
from tests import factories
from tests.ra.conftest import staff_id, units


def csr_pem() -> str:
    return factories.csr(factories.key("p256")).decode()


def issue_via_api(officer, approver, sub_id, **extra):
    st, req = officer.post("/api/v1/requests", {"type": "issue", "subscriber_id": sub_id,
                                                "profile": "personal", "csr_pem": csr_pem(),
                                                **extra})
    assert st == 201, req
    assert req["state"] == "submitted"
    st, done = approver.post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 200, done
    return done


def test_issue_then_renew_change_and_revoke(api_as, db, clock):
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.1")
    done = issue_via_api(officer, approver, sub)
    assert done["state"] == "issued" and done["certificate_serial"]
    serial = done["certificate_serial"]
    st, cert = officer.get(f"/api/v1/certificates/{serial}")
    assert st == 200 and cert["status"] == "valid" and cert["subscriber_id"] == sub
    leaf = x509.load_pem_x509_certificate(cert["pem"].encode())
    assert leaf.serial_number == int(serial, 16)

    # renew: a new certificate, at most 3 years
    st, bad = officer.post("/api/v1/requests", {"type": "renew", "subscriber_id": sub,
                                                "serial": serial, "csr_pem": csr_pem(),
                                                "validity_days": 3 * 365 + 1})
    assert st == 422 and bad["error"]["field"] == "validity_days"
    st, req = officer.post("/api/v1/requests", {"type": "renew", "subscriber_id": sub,
                                                "serial": serial, "csr_pem": csr_pem()})
    assert st == 201, req
    st, renewed = approver.post(f"/api/v1/requests/{req['id']}/approve")
    assert renewed["state"] == "issued", renewed
    st, new = officer.get(f"/api/v1/certificates/{renewed['certificate_serial']}")
    life = dt.datetime.fromisoformat(new["not_after"]) - clock.now()
    assert dt.timedelta(days=1094) < life <= dt.timedelta(days=1095)

    # change: same expiry as the certificate it replaces, which is revoked
    st, req = officer.post("/api/v1/requests", {"type": "change", "subscriber_id": sub,
                                                "serial": renewed["certificate_serial"],
                                                "csr_pem": csr_pem(),
                                                "reason": "affiliationChanged"})
    assert st == 201, req
    clock.advance(days=2)
    st, changed = approver.post(f"/api/v1/requests/{req['id']}/approve")
    assert changed["state"] == "issued", changed
    st, newer = officer.get(f"/api/v1/certificates/{changed['certificate_serial']}")
    assert newer["not_after"] == new["not_after"]
    st, old = officer.get(f"/api/v1/certificates/{renewed['certificate_serial']}")
    assert old["status"] == "revoked" and old["revocation_reason"] == "affiliationChanged"

    # revoke via the certificate endpoint: a request approved by someone else
    st, rv = officer.post(f"/api/v1/certificates/{serial}/revoke", {"reason": "keyCompromise"})
    assert st == 202 and rv["type"] == "revoke" and rv["state"] == "submitted", rv
    st, again = officer.post(f"/api/v1/certificates/{serial}/revoke", {"reason": "superseded"})
    assert st == 409 and again["error"]["code"] == "duplicate_request"
    st, done = approver.post(f"/api/v1/requests/{rv['id']}/approve")
    assert done["state"] == "done", done
    st, c = officer.get(f"/api/v1/certificates/{serial}")
    assert c["status"] == "revoked" and c["revocation_reason"] == "keyCompromise"
    st, lst = officer.get(f"/api/v1/certificates?subscriber_id={sub}&status=valid")
    assert [x["serial"] for x in lst["items"]] == [changed["certificate_serial"]]

    with db.transaction() as s:
        actions = s.execute(select(AuditEvent.action).where(
            AuditEvent.target == f"request:{rv['id']}").order_by(AuditEvent.seq)).scalars().all()
    # created and submitted in one call: one request.create event (details: submitted, due_at)
    assert actions == ["request.create", "request.approve", "request.done"]


def test_two_person_rule(api_as, db, services):
    sub = staff_id(db, "staff.hanoi.3")
    with db.transaction() as s:
        create_user(s, Caller.system(), username="both.hanoi", role="ra_approver",
                    domain_code="hanoi", at=services.clock.now())
    # an approver that may also prepare requests is a central operator: refuse self-approval
    op = api_as("operator")
    st, req = op.post("/api/v1/requests", {"type": "issue", "subscriber_id": sub,
                                           "csr_pem": csr_pem()})
    assert st == 201
    st, err = op.post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 403 and err["error"]["code"] == "two_person_rule"
    # an officer cannot approve at all; a Quảng Ninh approver cannot see it
    st, err = api_as("ra.hanoi").post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 403 and err["error"]["code"] == "forbidden"
    st, err = api_as("approver.quangninh").post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 404
    with db.transaction() as s:
        assert s.get(RaRequest, req["id"]).state == "submitted"
        assert s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.subscriber_id == sub)).scalar_one() == 0
    st, ok = api_as("both.hanoi").post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 200 and ok["state"] == "issued"
    st, err = api_as("approver.hanoi").post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 409


def test_reject_and_draft(api_as, db):
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.4")
    st, draft = officer.post("/api/v1/requests", {"type": "issue", "subscriber_id": sub,
                                                  "csr_pem": csr_pem(), "submit": False})
    assert st == 201 and draft["state"] == "draft" and draft["due_at"] is None
    st, err = approver.post(f"/api/v1/requests/{draft['id']}/approve")
    assert st == 409
    st, sub_req = officer.post(f"/api/v1/requests/{draft['id']}/submit")
    assert sub_req["state"] == "submitted" and sub_req["due_at"]
    st, rej = approver.post(f"/api/v1/requests/{draft['id']}/reject", {"reason": "Sai CSR"})
    assert st == 200 and rej["state"] == "rejected" and rej["rejected_by"] == "approver.hanoi"
    st, err = approver.post(f"/api/v1/requests/{draft['id']}/approve")
    assert st == 409 and err["error"]["code"] == "wrong_state"


def test_central_profile_needs_central_operator(api_as, db, services):
    with db.transaction() as s:
        from ca.registry import add_subscriber
        org_sub = add_subscriber(s, organization_id=units(db, "hanoi")[0], kind="organization",
                                 full_name="Sở Y tế Hà Nội", id_type="CMND",
                                 id_number="123456789", email="soyte@hanoi.gov.vn",
                                 at=services.clock.now(), actor="test").id
    officer, approver, op = api_as("ra.hanoi"), api_as("approver.hanoi"), api_as("operator")
    st, req = officer.post("/api/v1/requests", {"type": "issue", "subscriber_id": org_sub,
                                                "profile": "organization", "csr_pem": csr_pem()})
    assert st == 201 and req["central_approval_required"] is True, req
    st, one = approver.post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 200 and one["state"] == "submitted" and one["approved_by"] == "approver.hanoi"
    st, again = approver.post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 409
    st, queue = op.get("/api/v1/requests?needs_central=true")
    assert [r["id"] for r in queue["items"]] == [req["id"]]
    st, done = op.post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 200 and done["state"] == "issued", done
    assert done["central_approved_by"] == "operator"


@pytest.mark.postgres_only
def test_two_approvers_at_once_yield_one_certificate(db, services, caller_of):
    with db.transaction() as s:
        create_user(s, Caller.system(), username="approver2.hanoi", role="ra_approver",
                    domain_code="hanoi", at=services.clock.now())
    sub = staff_id(db, "staff.hanoi.5")
    from ca.ra import requests as ra_requests
    for _round in range(3):
        with db.transaction() as s:
            req = ra_requests.create(s, services.clock, caller_of("ra.hanoi"), {
                "type": "issue", "subscriber_id": sub, "csr_pem": csr_pem()},
                services.profiles)
            rid = req.id
        barrier = threading.Barrier(2)
        outcomes = []

        def run(name):
            barrier.wait()
            try:
                r = approval.approve(services.db, services.clock, caller_of(name), rid,
                                     services.issuance())
                outcomes.append(("ok", r.state))
            except Exception as exc:  # noqa: BLE001 - the loser's error is the point
                outcomes.append(("error", getattr(exc, "code", repr(exc))))

        threads = [threading.Thread(target=run, args=(n,))
                   for n in ("approver.hanoi", "approver2.hanoi")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(outcomes) == [("error", "already_approved"), ("ok", "issued")], outcomes
        with db.transaction() as s:
            n = s.execute(select(func.count()).select_from(Certificate).where(
                Certificate.subscriber_id == sub, Certificate.state == "issued")).scalar_one()
            assert n == _round + 1
            assert s.get(RaRequest, rid).state == "issued"


def test_same_approver_twice_sequentially_is_one_certificate(api_as, db):
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.2")
    done = issue_via_api(officer, approver, sub)
    st, err = approver.post(f"/api/v1/requests/{done['id']}/approve")
    assert st == 409
    with db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.subscriber_id == sub)).scalar_one() == 1


def test_staff_self_service(api_as, db):
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.1")
    done = issue_via_api(officer, approver, sub)
    staff = api_as("staff.hanoi.1")
    st, mine = staff.get("/api/v1/certificates")
    assert [c["serial"] for c in mine["items"]] == [done["certificate_serial"]]
    st, err = staff.post("/api/v1/requests", {"type": "issue", "subscriber_id": sub,
                                              "csr_pem": csr_pem()})
    assert st == 403
    st, err = staff.post(f"/api/v1/certificates/{done['certificate_serial']}/revoke",
                         {"reason": "superseded"})
    assert st == 403
    st, lost = staff.post(f"/api/v1/certificates/{done['certificate_serial']}/revoke",
                          {"reason": "keyCompromise"})
    assert st == 202, lost
    st, other = staff.get(f"/api/v1/subscribers/{staff_id(db, 'staff.hanoi.2')}")
    assert st == 404
    st, ok = approver.post(f"/api/v1/requests/{lost['id']}/approve")
    assert ok["state"] == "done"


def test_restore_request_has_one_working_day(api_as, db, clock):
    officer = api_as("ra.hanoi")
    st, req = officer.post("/api/v1/requests", {"type": "restore",
                                                "subscriber_id": staff_id(db, "staff.hanoi.1")})
    assert st == 201, req
    # 2026-06-01 08:00 UTC is a Monday, 15:00 in Hà Nội: due Tuesday 15:00 local
    assert req["due_at"] == "2026-06-02T08:00:00+00:00"
    st, done = api_as("approver.hanoi").post(f"/api/v1/requests/{req['id']}/approve")
    assert done["state"] == "done"
    clock.advance(days=3)
    st, req2 = officer.post("/api/v1/requests", {"type": "issue", "csr_pem": csr_pem(),
                                                 "subscriber_id": staff_id(db, "staff.hanoi.3")})
    # Thursday 15:00 local + 3 working days = Tuesday 15:00 local
    assert req2["due_at"] == "2026-06-09T08:00:00+00:00"
    clock.advance(days=5)
    st, overdue = officer.get("/api/v1/requests?overdue=true")
    assert overdue["items"] == []
    clock.advance(seconds=1)
    st, overdue = officer.get("/api/v1/requests?overdue=true")
    assert [r["id"] for r in overdue["items"]] == [req2["id"]]
    assert overdue["items"][0]["overdue"] is True
