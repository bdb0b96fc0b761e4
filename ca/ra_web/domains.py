"""Central view of RA domains: their officers and approvers, and suspending a delegation."""
from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.errors import Conflict, InvalidInput, NotFound
from ca.ra.roles import DOMAIN_ROLES, Caller
from ca.store.models import RaDomain
from ca.store.models_ra import RaUser


def overview(session: Session, caller: Caller) -> list[dict]:
    """Every RA domain (central callers only) with its officers and approvers."""
    caller.require("read")
    if not caller.is_central:
        caller.require("audit.read")
    staff: dict[int, list[tuple[str, str]]] = {}
    for u in session.execute(select(RaUser).where(RaUser.role.in_(DOMAIN_ROLES))
                             .order_by(RaUser.username)).scalars():
        staff.setdefault(u.domain_id, []).append((u.username, u.role))
    return [{"id": d.id, "code": d.code, "name": d.name, "kind": d.kind, "status": d.status,
             "officers": [n for n, r in staff.get(d.id, ()) if r == "ra_officer"],
             "approvers": [n for n, r in staff.get(d.id, ()) if r == "ra_approver"]}
            for d in session.execute(select(RaDomain).order_by(RaDomain.kind, RaDomain.name))
            .scalars()]


def set_status(session: Session, clock: Clock, caller: Caller, domain_id: int,
               status: str) -> RaDomain:
    """Suspend or restore a domain's delegation at once (a conditional UPDATE, audited)."""
    caller.require("request.central_approve")
    if status not in ("active", "suspended"):
        raise InvalidInput("status is active or suspended", field="status")
    dom = session.get(RaDomain, domain_id)
    if dom is None:
        raise NotFound(f"no RA domain {domain_id}", field="domain")
    if dom.status == status:
        raise Conflict(f"the domain is already {status}", field="status", code="no_change")
    if dom.status not in ("active", "suspended"):
        raise Conflict(f"the domain is {dom.status}", field="status", code="wrong_state")
    now = clock.now()
    old = dom.status
    session.execute(update(RaDomain).where(RaDomain.id == dom.id, RaDomain.status == old)
                    .values(status=status))
    audit.record(session, "domain.suspend" if status == "suspended" else "domain.resume",
                 actor=caller.actor, at=now, target=f"domain:{dom.code}", domain_id=dom.id,
                 details={"from": old, "to": status})
    session.refresh(dom)
    return dom
