"""Report figures for leaders (centre and per province, always through the caller's Scope):
certificates by status, issuance per month, staff coverage, requests and their deadlines."""
from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from dataclasses import dataclass

from sqlalchemy import case, func, literal_column, select
from sqlalchemy.orm import Session

from ca.clock import require_aware
from ca.errors import InvalidInput
from ca.ra.scope import Scope
from ca.ra.workdays import DEADLINE_DAYS, VN_TZ
from ca.store.models import Certificate, Organization, RaDomain, Subscriber
from ca.store.models_ra import RaRequest

GROUPINGS = ("domain", "agency", "device_type")
OPEN_STATES = ("submitted", "approved")
FINISHED_STATES = ("issued", "done")


@dataclass(frozen=True)
class StatusRow:
    group: str
    active: int
    expired: int
    revoked: int

    @property
    def total(self) -> int:
        return self.active + self.expired + self.revoked


def _agency_names(session: Session) -> dict[int, str]:
    """Organisation id -> name of its nearest agency (itself, or the agency above a unit)."""
    orgs = {oid: (parent, kind, name) for oid, parent, kind, name in session.execute(
        select(Organization.id, Organization.parent_id, Organization.kind, Organization.name))}
    out: dict[int, str] = {}
    for oid in orgs:
        node, hops = oid, 0
        while node is not None and orgs[node][1] != "agency" and hops < 16:
            node, hops = orgs[node][0], hops + 1
        out[oid] = orgs[node][2] if node is not None and node in orgs else orgs[oid][2]
    return out


def certificate_status(session: Session, scope: Scope, now: dt.datetime, by: str = "domain"
                       ) -> list[StatusRow]:
    """Released subscriber certificates in scope: active / expired / revoked at `now`, grouped
    by RA domain (province or ministry), direct managing agency, or key device type."""
    if by not in GROUPINGS:
        raise InvalidInput(f"group by one of {', '.join(GROUPINGS)}", field="by")
    now = require_aware(now, "now")
    status = case((Certificate.revoked_at.is_not(None), "revoked"),
                  (Certificate.not_after <= now, "expired"), else_="active")
    key = {"domain": Subscriber.domain_id, "agency": Subscriber.organization_id,
           "device_type": Subscriber.device_type}[by]
    rows = session.execute(
        select(key, status, func.count())
        .join(Subscriber, Certificate.subscriber_id == Subscriber.id)
        .where(scope.certificates()).group_by(key, status)).all()
    if by == "domain":
        names = dict(session.execute(select(RaDomain.id, RaDomain.name)).all())
    elif by == "agency":
        names = _agency_names(session)
    else:
        names = {}
    acc: dict[str, Counter] = defaultdict(Counter)
    for k, st, n in rows:
        acc[str(names.get(k, k))][st] += n
    return sorted((StatusRow(g, c["active"], c["expired"], c["revoked"]) for g, c in acc.items()),
                  key=lambda r: (-r.total, r.group))


def issued_per_month(session: Session, scope: Scope, now: dt.datetime, months: int = 12
                     ) -> list[tuple[str, int]]:
    """Certificates issued per calendar month (Vietnam time), the last `months` months, oldest
    first, months without issuance included as 0."""
    if not isinstance(months, int) or not 1 <= months <= 120:
        raise InvalidInput("months must be between 1 and 120", field="months")
    local = require_aware(now, "now").astimezone(VN_TZ)
    y, m = local.year, local.month
    keys = []
    for _ in range(months):
        keys.append(f"{y:04d}-{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    start = dt.datetime(int(keys[-1][:4]), int(keys[-1][5:7]), 1, tzinfo=VN_TZ)
    month = _month_sql(session)
    # Counted in the database (issue 8: one row per month instead of one per certificate).
    counts = dict(session.execute(
        select(month, func.count()).where(scope.certificates(), Certificate.issued_at >= start,
                                          Certificate.issued_at <= now).group_by(month)).all())
    return [(k, counts.get(k, 0)) for k in reversed(keys)]


def _month_sql(session: Session):
    """'YYYY-MM' of Certificate.issued_at in Vietnam time (UTC+7 all year), in SQL."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", Certificate.issued_at)
                            + literal_column("INTERVAL '7 hours'"), "YYYY-MM")
    return func.strftime("%Y-%m", Certificate.issued_at, "+7 hours")  # stored as UTC text


@dataclass(frozen=True)
class CoverageRow:
    group: str
    staff: int
    with_valid: int

    @property
    def share(self) -> float:
        return self.with_valid / self.staff if self.staff else 0.0


def staff_coverage(session: Session, scope: Scope, now: dt.datetime) -> list[CoverageRow]:
    """Per RA domain: registered staff (person subscribers) and how many hold a valid
    certificate now."""
    now = require_aware(now, "now")
    staff = dict(session.execute(select(Subscriber.domain_id, func.count()).where(
        scope.subscribers(), Subscriber.kind == "person").group_by(Subscriber.domain_id)).all())
    holders = select(Certificate.subscriber_id).where(
        scope.certificates(), Certificate.revoked_at.is_(None), Certificate.not_before <= now,
        Certificate.not_after > now)
    valid = dict(session.execute(select(Subscriber.domain_id, func.count()).where(
        scope.subscribers(), Subscriber.kind == "person", Subscriber.id.in_(holders))
        .group_by(Subscriber.domain_id)).all())
    names = dict(session.execute(select(RaDomain.id, RaDomain.name)).all())
    return sorted((CoverageRow(names.get(d, str(d)), n, valid.get(d, 0)) for d, n in staff.items()),
                  key=lambda r: r.group)


def requests_by_state(session: Session, scope: Scope) -> dict[tuple[str, str], int]:
    """(type, state) -> number of requests in scope."""
    return {(t, s): n for t, s, n in session.execute(
        select(RaRequest.type, RaRequest.state, func.count()).where(scope.requests())
        .group_by(RaRequest.type, RaRequest.state))}


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (q in (0, 1]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Turnaround:
    type: str
    deadline_working_days: int
    finished: int
    median_hours: float | None
    p90_hours: float | None
    on_time: int

    @property
    def on_time_share(self) -> float:
        return self.on_time / self.finished if self.finished else 0.0


def turnaround(session: Session, scope: Scope, request_type: str = "issue",
               since: dt.datetime | None = None) -> Turnaround:
    """Time from submission to completion of finished requests of a type, against their
    working-day deadline (`due_at`, set at submission from the holiday calendar)."""
    if request_type not in DEADLINE_DAYS:
        raise InvalidInput(f"request type must be one of {', '.join(DEADLINE_DAYS)}", field="type")
    stmt = select(RaRequest.submitted_at, RaRequest.completed_at, RaRequest.due_at).where(
        scope.requests(), RaRequest.type == request_type, RaRequest.state.in_(FINISHED_STATES),
        RaRequest.submitted_at.is_not(None), RaRequest.completed_at.is_not(None))
    if since is not None:
        stmt = stmt.where(RaRequest.completed_at >= require_aware(since, "since"))
    hours, on_time = [], 0
    for submitted, completed, due in session.execute(stmt):
        hours.append((completed - submitted).total_seconds() / 3600)
        on_time += due is not None and completed <= due
    return Turnaround(request_type, DEADLINE_DAYS[request_type], len(hours),
                      quantile(hours, 0.5), quantile(hours, 0.9), on_time)


def overdue(session: Session, scope: Scope, now: dt.datetime, request_type: str | None = None,
            limit: int = 500) -> list[RaRequest]:
    """Open requests past their deadline, most overdue first (restores: pass 'restore')."""
    stmt = select(RaRequest).where(scope.requests(), RaRequest.state.in_(OPEN_STATES),
                                   RaRequest.due_at < require_aware(now, "now"))
    if request_type is not None:
        stmt = stmt.where(RaRequest.type == request_type)
    return list(session.execute(stmt.order_by(RaRequest.due_at, RaRequest.id).limit(limit))
                .scalars())


def scope_for(session: Session, caller, domain_id: int | None = None) -> Scope:
    """The caller's Scope, narrowed to one RA domain when asked: the centre may pick any
    domain; a province only its own (another one is NotFound, exactly like a missing one)."""
    from ca.errors import NotFound
    scope = Scope(session, caller)
    if domain_id is None:
        return scope
    if not isinstance(domain_id, int) or session.get(RaDomain, domain_id) is None or (
            not scope.everything and domain_id != scope.domain_id):
        raise NotFound("no such RA domain", code="not_found")
    if scope.everything:
        scope.everything, scope.domain_id, scope.self_only = False, domain_id, False
    return scope


def domains_for(session: Session, scope: Scope) -> list[tuple[int, str]]:
    """The RA domains a report can be narrowed to (id, name), by name."""
    return [tuple(r) for r in session.execute(select(RaDomain.id, RaDomain.name)
                                              .where(scope.domains()).order_by(RaDomain.name))]
