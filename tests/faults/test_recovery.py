"""The recovery pieces on their own, on a real database: requests left 'approved' by a crash or
a database outage are resolved by what actually happened, and Database.run retries a unit of
work after a really dropped connection (PostgreSQL)."""
from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from sqlalchemy import select, text, update

from ca.issuance.service import IssueRequest
from ca.ra import approval
from ca.ra import requests as ra_requests
from ca.store.models import AuditEvent
from ca.store.models_ra import RaRequest
from tests import factories
from tests.conftest import PG_URL
from tests.ra.conftest import caller_of, staff_id  # noqa: F401 (fixture)


def _approved_request(db, clock, caller_of, profiles, username: str) -> int:
    """A request approved and then never carried out (the process died in between)."""
    sub = staff_id(db, username)
    with db.transaction() as s:
        req = ra_requests.create(s, clock, caller_of("ra.hanoi"), {
            "type": "issue", "subscriber_id": sub, "profile": "personal",
            "csr_pem": factories.csr().decode()}, profiles)
        rid = req.id
        s.execute(update(RaRequest).where(RaRequest.id == rid).values(
            state="approved", approved_by="approver.hanoi", approved_at=clock.now()))
    return rid


def test_recover_interrupted_requests(db, clock, caller_of, issuance, profiles):
    lost = _approved_request(db, clock, caller_of, profiles, "staff.hanoi.1")
    stored = _approved_request(db, clock, caller_of, profiles, "staff.hanoi.2")
    # The second one's certificate was stored before the outage (its cert.issue names it).
    cert = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                       subscriber_id=staff_id(db, "staff.hanoi.2"),
                                       csr=factories.csr(), details={"request_id": stored}))
    later = type(clock)(clock.now() + dt.timedelta(minutes=10))
    done = approval.recover_interrupted(db, later, dt.timedelta(minutes=5), actor="test")
    assert sorted(done) == sorted([(lost, "submitted"), (stored, "issued")])
    with db.transaction() as s:
        a, b = s.get(RaRequest, lost), s.get(RaRequest, stored)
        assert a.state == "submitted" and a.approved_by is None and a.certificate_serial is None
        assert b.state == "issued" and b.certificate_serial == cert.serial
        events = s.execute(select(AuditEvent.action, AuditEvent.target, AuditEvent.details)
                           .order_by(AuditEvent.seq.desc()).limit(2)).all()
    assert {(e.action, e.target) for e in events} == {
        ("request.approve.undone", f"request:{lost}"), ("request.issued", f"request:{stored}")}
    assert any(json.loads(e.details).get("recovered") for e in events)
    # Idempotent: nothing is left to resolve.
    assert approval.recover_interrupted(db, later, dt.timedelta(minutes=5), actor="test") == []


@pytest.mark.postgres_only
def test_database_run_retries_after_a_dropped_connection(db):
    calls = []

    def work(s):
        calls.append(s.execute(text("SELECT pg_backend_pid()")).scalar_one())
        if len(calls) == 1:  # the server drops this very connection mid-transaction
            with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"),
                                 autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (calls[0],))
            s.execute(text("SELECT 1"))
        return s.execute(text("SELECT count(*) FROM ra_request")).scalar_one()

    assert db.run(work) >= 0
    assert len(calls) == 2 and calls[0] != calls[1]


def test_database_run_does_not_retry_a_bug(db):
    calls = []

    def work(s):
        calls.append(1)
        s.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(Exception):
        db.run(work)
    assert len(calls) == 1


def test_recovered_change_also_revokes_the_replaced_certificate(db, clock, caller_of, issuance,
                                                               profiles):
    """A change request whose new certificate was stored before the outage cut it short (before
    the old one was revoked) ends with the old one revoked, as execute() would have done."""
    from ca.store.models import Certificate
    sub = staff_id(db, "staff.hanoi.3")
    old = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                      subscriber_id=sub, csr=factories.csr()))
    with db.transaction() as s:
        req = ra_requests.create(s, clock, caller_of("ra.hanoi"), {
            "type": "change", "subscriber_id": sub, "serial": old.serial,
            "reason": "affiliationChanged"}, profiles)
        rid = req.id
        s.execute(update(RaRequest).where(RaRequest.id == rid).values(
            state="approved", approved_by="approver.hanoi", approved_at=clock.now()))
    new = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test", csr=None,
                                      subscriber_id=sub, reuse_key_serial=old.serial,
                                      not_after=old.not_after, details={"request_id": rid}))
    later = type(clock)(clock.now() + dt.timedelta(minutes=10))
    assert approval.recover_interrupted(db, later, dt.timedelta(minutes=5),
                                        actor="test") == [(rid, "issued")]
    with db.transaction() as s:
        rows = {c.serial: c for c in s.execute(select(Certificate).where(
            Certificate.serial.in_((old.serial, new.serial)))).scalars()}
        assert rows[old.serial].revocation_reason == "affiliationChanged"
        assert rows[new.serial].revoked_at is None
        assert s.get(RaRequest, rid).certificate_serial == new.serial
