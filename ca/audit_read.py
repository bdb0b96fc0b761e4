"""Who sees the audit trail: central auditors and operators everything, RA officers and approvers
their own domain's events, nobody else; every read is itself an audit event. There is no
function that edits or deletes events (and the database refuses it, ca.audit_guard)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select, true
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import require_aware
from ca.errors import InvalidInput, PermissionDenied
from ca.ra.roles import Caller
from ca.store.models import AuditEvent

MAX_PAGE = 500


@dataclass(frozen=True)
class AuditQuery:
    action_prefix: str | None = None  # "cert." matches cert.issue, cert.revoke ...
    actor: str | None = None
    target: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    before_seq: int | None = None  # paging: newest first, continue below this seq
    limit: int = 100

    def checked(self) -> "AuditQuery":
        if not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        for name in ("action_prefix", "actor", "target"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or len(value) > 200):
                raise InvalidInput(f"{name} must be text of at most 200 characters", field=name)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                try:
                    require_aware(value, name)
                except (ValueError, AttributeError):
                    raise InvalidInput(f"{name} must be a time with a zone", field=name) from None
        if self.before_seq is not None and (not isinstance(self.before_seq, int)
                                            or not 0 < self.before_seq < 2**62):
            raise InvalidInput("before_seq must be a positive event number", field="before_seq")
        return self


def visible(caller: Caller) -> ColumnElement[bool]:
    """The events `caller` may read (PermissionDenied when none)."""
    if caller.can("audit.read"):
        return true()
    if caller.role in ("ra_officer", "ra_approver") and caller.domain_id is not None:
        return AuditEvent.domain_id == caller.domain_id
    raise PermissionDenied(f"the role {caller.role} may not read the audit trail",
                           code="forbidden")


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def read_events(session: Session, caller: Caller, query: AuditQuery, *, at: dt.datetime
                ) -> list[AuditEvent]:
    """A page of events in scope, newest first; appends an `audit.read` event in the same
    transaction (who read what, with which filters)."""
    q = query.checked()
    stmt = select(AuditEvent).where(visible(caller))
    if q.action_prefix:
        stmt = stmt.where(AuditEvent.action.like(_like_prefix(q.action_prefix), escape="\\"))
    if q.actor:
        stmt = stmt.where(AuditEvent.actor == q.actor)
    if q.target:
        stmt = stmt.where(AuditEvent.target == q.target)
    if q.since:
        stmt = stmt.where(AuditEvent.at >= q.since)
    if q.until:
        stmt = stmt.where(AuditEvent.at < q.until)
    if q.before_seq:
        stmt = stmt.where(AuditEvent.seq < q.before_seq)
    rows = session.execute(stmt.order_by(AuditEvent.seq.desc()).limit(q.limit)).scalars().all()
    audit.record(session, "audit.read", actor=caller.actor, at=at,
                 domain_id=None if caller.can("audit.read") else caller.domain_id, details={
                     "filters": {k: v for k, v in {
                         "action_prefix": q.action_prefix, "actor": q.actor, "target": q.target,
                         "since": q.since, "until": q.until, "before_seq": q.before_seq,
                         "limit": q.limit}.items() if v is not None},
                     "returned": len(rows)})
    return rows
