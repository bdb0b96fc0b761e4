"""Who sees the audit trail, and that reading it is audited."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from ca import audit
from ca.audit_read import AuditQuery, read_events
from ca.errors import InvalidInput, PermissionDenied
from ca.ra.roles import Caller
from ca.store.models import AuditEvent, RaDomain


def _domains(db):
    with db.transaction() as s:
        return dict(s.execute(select(RaDomain.code, RaDomain.id)).all())


def _seed(db, clock, domains):
    with db.transaction() as s:
        for code, dom in list(domains.items())[:2]:
            for i in range(3):
                audit.record(s, "request.approve", actor=f"user:approver.{code}", at=clock.now(),
                             target=f"request:{code}:{i}", domain_id=dom)
        audit.record(s, "ca.init", actor="system:cli", at=clock.now(), target="central")


def test_central_auditor_sees_everything_and_the_read_is_audited(db, clock):
    domains = _domains(db)
    _seed(db, clock, domains)
    auditor = Caller(username="auditor", role="central_auditor")
    with db.transaction() as s:
        rows = read_events(s, auditor, AuditQuery(limit=7), at=clock.now())
        assert [r.action for r in rows][:1] == ["ca.init"] and len(rows) == 7
        assert [r.seq for r in rows] == sorted((r.seq for r in rows), reverse=True)
    with db.transaction() as s:
        last = s.execute(select(AuditEvent).order_by(AuditEvent.seq.desc())).scalars().first()
    assert last.action == "audit.read" and last.actor == "user:auditor"
    assert '"returned":7' in last.details


def test_ra_officer_sees_only_the_own_domain(db, clock):
    domains = _domains(db)
    _seed(db, clock, domains)
    first, second = list(domains.values())[:2]
    officer = Caller(username="ra.x", role="ra_officer", domain_id=first)
    with db.transaction() as s:
        rows = read_events(s, officer, AuditQuery(action_prefix="request."), at=clock.now())
    assert len(rows) == 3 and {r.domain_id for r in rows} == {first}
    with db.transaction() as s:
        again = read_events(s, officer, AuditQuery(), at=clock.now())
    # the officer's own earlier read is in the domain's trail; nothing of the other domain
    assert second not in {r.domain_id for r in again}
    assert again[0].action == "audit.read" and again[0].domain_id == first


def test_subscribers_may_not_read_the_trail(db, clock):
    with pytest.raises(PermissionDenied):
        with db.transaction() as s:
            read_events(s, Caller(username="staff", role="subscriber"), AuditQuery(),
                        at=clock.now())


@pytest.mark.parametrize("query", [
    AuditQuery(limit=0), AuditQuery(limit=10_000), AuditQuery(actor="x" * 500),
    AuditQuery(since=dt.datetime(2026, 1, 1)), AuditQuery(before_seq=-3),
])
def test_bad_filters_are_clear_errors(db, clock, query):
    with pytest.raises(InvalidInput):
        with db.transaction() as s:
            read_events(s, Caller(username="a", role="central_auditor"), query, at=clock.now())


def test_prefix_filter_is_literal(db, clock):
    with db.transaction() as s:
        audit.record(s, "cert_x", actor="a", at=clock.now())
        audit.record(s, "certXissue", actor="a", at=clock.now())
        rows = read_events(s, Caller(username="a", role="central_auditor"),
                           AuditQuery(action_prefix="cert_"), at=clock.now())
    assert [r.action for r in rows] == ["cert_x"]
