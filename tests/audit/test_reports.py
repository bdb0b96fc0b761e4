"""Report figures on generated data (three provinces, thousands of certificates) equal direct SQL
counts; a province officer's figures cover only the province."""
from __future__ import annotations

import datetime as dt
import statistics

import pytest
from sqlalchemy import bindparam, text

from ca import reports
from ca.errors import InvalidInput
from ca.ra.roles import Caller
from ca.ra.scope import Scope
from ca.store.base import UTCDateTime
from tests.audit import reportdata

CENTRAL = Caller(username="auditor", role="central_auditor")

STATUS_SQL = """
SELECT d.name AS grp,
  SUM(CASE WHEN c.revoked_at IS NOT NULL THEN 1 ELSE 0 END) AS revoked,
  SUM(CASE WHEN c.revoked_at IS NULL AND c.not_after <= :now THEN 1 ELSE 0 END) AS expired,
  SUM(CASE WHEN c.revoked_at IS NULL AND c.not_after > :now THEN 1 ELSE 0 END) AS active
FROM certificate c JOIN subscriber s ON s.id = c.subscriber_id JOIN ra_domain d ON d.id = s.domain_id
WHERE c.state = 'issued' {extra} GROUP BY d.name"""


@pytest.fixture
def data(db, clock):
    return reportdata.generate(db, clock.now())


def _sql(db, sql, **params):
    stmt = text(sql)
    if "now" in params:
        stmt = stmt.bindparams(bindparam("now", type_=UTCDateTime()))
    with db.engine.connect() as conn:
        return conn.execute(stmt, params).all()


def test_certificate_status_by_province_matches_sql(db, clock, data):
    assert data["certificates"] > 1000
    with db.transaction() as s:
        got = {r.group: (r.active, r.expired, r.revoked)
               for r in reports.certificate_status(s, Scope(s, CENTRAL), clock.now())}
    want = {g: (a, e, r) for g, r, e, a in _sql(db, STATUS_SQL.format(extra=""), now=clock.now())}
    assert got == want
    with db.transaction() as s:
        by_device = reports.certificate_status(s, Scope(s, CENTRAL), clock.now(), "device_type")
        by_agency = reports.certificate_status(s, Scope(s, CENTRAL), clock.now(), "agency")
    total = sum(sum(v) for v in want.values())
    assert sum(r.total for r in by_device) == total == sum(r.total for r in by_agency)
    [(sims,)] = _sql(db, "SELECT COUNT(*) FROM certificate c JOIN subscriber s ON s.id = "
                         "c.subscriber_id WHERE c.state = 'issued' AND s.device_type = 'SIM'")
    assert {r.group: r.total for r in by_device}["SIM"] == sims


def test_a_province_officer_sees_only_the_province(db, clock, data):
    dom = data["domains"]["quangninh"]
    officer = Caller(username="ra.quangninh", role="ra_officer", domain_id=dom)
    with db.transaction() as s:
        rows = reports.certificate_status(s, Scope(s, officer), clock.now())
        states = reports.requests_by_state(s, Scope(s, officer))
    want = _sql(db, STATUS_SQL.format(extra=f"AND s.domain_id = {dom}"), now=clock.now())
    assert [(r.group, r.active, r.expired, r.revoked) for r in rows] == [
        (g, a, e, r) for g, r, e, a in want]
    [(n,)] = _sql(db, f"SELECT COUNT(*) FROM ra_request WHERE domain_id = {dom}")
    assert sum(states.values()) == n


def test_issued_per_month_and_coverage_match_sql(db, clock, data):
    with db.transaction() as s:
        months = reports.issued_per_month(s, Scope(s, CENTRAL), clock.now(), months=36)
        coverage = reports.staff_coverage(s, Scope(s, CENTRAL), clock.now())
    assert len(months) == 36 and months[-1][0] == "2026-06"
    start = dt.datetime(int(months[0][0][:4]), int(months[0][0][5:]), 1,
                        tzinfo=dt.timezone(dt.timedelta(hours=7)))
    [(n,)] = _sql(db, "SELECT COUNT(*) FROM certificate WHERE state = 'issued' AND issued_at >= "
                      ":now", now=start)
    assert sum(c for _, c in months) == n
    rows = _sql(db, """SELECT d.name, COUNT(*), SUM(CASE WHEN EXISTS (SELECT 1 FROM certificate c
        WHERE c.subscriber_id = s.id AND c.state = 'issued' AND c.revoked_at IS NULL
        AND c.not_after > :now AND c.not_before <= :now) THEN 1 ELSE 0 END)
        FROM subscriber s JOIN ra_domain d ON d.id = s.domain_id WHERE s.kind = 'person'
        GROUP BY d.name""", now=clock.now())
    assert {r.group: (r.staff, r.with_valid) for r in coverage} == {g: (a, b) for g, a, b in rows}
    assert all(0 <= r.share <= 1 for r in coverage)


def test_turnaround_and_overdue_match_sql(db, clock, data):
    with db.transaction() as s:
        t = reports.turnaround(s, Scope(s, CENTRAL), "issue")
        late = reports.overdue(s, Scope(s, CENTRAL), clock.now())
        restores = reports.overdue(s, Scope(s, CENTRAL), clock.now(), "restore")
    stmt = text("SELECT submitted_at, completed_at, due_at FROM ra_request WHERE type = 'issue' "
                "AND state IN ('issued', 'done')").columns(
        submitted_at=UTCDateTime(), completed_at=UTCDateTime(), due_at=UTCDateTime())
    with db.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    assert t.finished == len(rows) > 10
    hours = sorted((b - a).total_seconds() / 3600 for a, b, _ in rows)
    assert t.median_hours == hours[(len(hours) + 1) // 2 - 1]
    assert t.p90_hours == hours[-(-len(hours) * 9 // 10) - 1]
    assert t.on_time == sum(1 for _, b, c in rows if b <= c) > 0
    assert t.p90_hours >= t.median_hours and t.deadline_working_days == 3
    [(n_late,)] = _sql(db, "SELECT COUNT(*) FROM ra_request WHERE state IN ('submitted', "
                           "'approved') AND due_at < :now", now=clock.now())
    assert len(late) == n_late and all(r.type == "restore" for r in restores)
    assert [r.due_at for r in late] == sorted(r.due_at for r in late)


def test_quantile_and_bad_input():
    assert reports.quantile([], 0.5) is None
    assert reports.quantile([5, 1, 3, 2, 4], 0.5) == 3 == statistics.median([5, 1, 3, 2, 4])
    assert reports.quantile(list(range(1, 11)), 0.9) == 9


def test_report_parameters_are_checked(db, clock):
    with db.transaction() as s:
        with pytest.raises(InvalidInput):
            reports.certificate_status(s, Scope(s, CENTRAL), clock.now(), by="colour")
        with pytest.raises(InvalidInput):
            reports.issued_per_month(s, Scope(s, CENTRAL), clock.now(), months=0)
        with pytest.raises(InvalidInput):
            reports.turnaround(s, Scope(s, CENTRAL), "teleport")
