"""Custody history of subscribers (which RA domain and unit had the person when) and the
history view built on it: the current domain reads all of it, a former domain its own periods."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca import audit
from ca.errors import NotFound
from ca.ra.roles import Caller
from ca.ra.scope import Scope, within
from ca.store.models import AuditEvent, Certificate, Organization, RaDomain, Subscriber
from ca.store.models_ra import RaRequest
from ca.store.models_transfer import SubscriberCustody, SubscriberTransfer


# --- custody periods ----------------------------------------------------------------------
def _open_custody(session: Session, subscriber_id: int) -> SubscriberCustody | None:
    return session.execute(select(SubscriberCustody).where(
        SubscriberCustody.subscriber_id == subscriber_id, SubscriberCustody.valid_to.is_(None))
        .order_by(SubscriberCustody.id.desc()).limit(1)).scalar_one_or_none()


def record_custody_change(session: Session, subscriber_id: int, from_domain: int,
                          to_domain: int, at: dt.datetime, actor: str, *,
                          from_organization_id: int | None = None,
                          to_organization_id: int | None = None,
                          transfer_id: int | None = None, reason: str = "reorg",
                          audit_event: bool = True) -> SubscriberCustody:
    """Close the subscriber's current custody period (creating it from the subscriber's
    registration if none was recorded yet) and open the next one. Call it in the transaction
    that moves the subscriber, before or after the move; it does not move anything itself.
    Usable in bulk (reorganisations): pass audit_event=False when the caller audits the bulk
    move itself. Organisation ids default to the subscriber's current organisation on the side
    whose domain matches the subscriber's current domain."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None:
        raise NotFound(f"no subscriber with id {subscriber_id}", field="subscriber_id")
    if from_organization_id is None and sub.domain_id == from_domain:
        from_organization_id = sub.organization_id
    if to_organization_id is None and sub.domain_id == to_domain:
        to_organization_id = sub.organization_id
    cur = _open_custody(session, subscriber_id)
    if cur is None:  # nothing recorded yet: the registration opened the first period
        cur = SubscriberCustody(subscriber_id=subscriber_id, domain_id=from_domain,
                                organization_id=from_organization_id,
                                valid_from=min(sub.created_at, at), valid_to=None,
                                recorded_by=actor, reason="created")
        session.add(cur)
    cur.valid_to = at
    row = SubscriberCustody(subscriber_id=subscriber_id, domain_id=to_domain,
                            organization_id=to_organization_id, from_domain_id=from_domain,
                            valid_from=at, valid_to=None, transfer_id=transfer_id,
                            recorded_by=actor, reason=reason[:64])
    session.add(row)
    session.flush()
    if audit_event:
        audit.record(session, "subscriber.custody", actor=actor, at=at,
                     target=f"subscriber:{subscriber_id}", domain_id=to_domain,
                     details={"from_domain": from_domain, "to_domain": to_domain,
                              "organization_id": to_organization_id, "reason": reason,
                              "transfer_id": transfer_id})
    return row


def custody_history(session: Session, subscriber_id: int) -> list[SubscriberCustody]:
    """Every custody period of the subscriber, oldest first; a subscriber never moved has one
    implicit period (not stored) from registration."""
    rows = list(session.execute(select(SubscriberCustody).where(
        SubscriberCustody.subscriber_id == subscriber_id)
        .order_by(SubscriberCustody.valid_from, SubscriberCustody.id)).scalars())
    if rows:
        return rows
    sub = session.get(Subscriber, subscriber_id)
    if sub is None:
        return []
    return [SubscriberCustody(subscriber_id=sub.id, domain_id=sub.domain_id,
                              organization_id=sub.organization_id, valid_from=sub.created_at,
                              valid_to=None, recorded_by="system:registry", reason="created")]


def history(session: Session, caller: Caller, subscriber_id: int) -> dict[str, Any]:
    """The person's history as the caller may read it: the domain that has the person now reads
    everything (every unit, certificate, request, event); a former domain reads what happened
    during its own custody periods and nothing after; anyone else gets NotFound."""
    scope = Scope(session, caller)
    sub, periods = scope.subscriber_history(subscriber_id)
    placements = []
    for c in custody_history(session, sub.id):
        if periods is not None and (c.domain_id != caller.domain_id or c.valid_to is None or (
                scope.org_ids is not None and c.organization_id not in scope.org_ids)):
            continue  # a former domain sees only its own periods
        dom = session.get(RaDomain, c.domain_id)
        org = session.get(Organization, c.organization_id) if c.organization_id else None
        placements.append({"domain": dom.code, "domain_name": dom.name,
                           "organization_id": c.organization_id,
                           "organization_name": org.name if org else None,
                           "valid_from": c.valid_from, "valid_to": c.valid_to,
                           "reason": c.reason, "transfer_id": c.transfer_id})
    certs = [c for c in session.execute(select(Certificate).where(
        Certificate.subscriber_id == sub.id, Certificate.state == "issued")
        .order_by(Certificate.issued_at, Certificate.id)).scalars()
        if within(periods, c.issued_at)]
    reqs = [r for r in session.execute(select(RaRequest).where(
        RaRequest.subscriber_id == sub.id).order_by(RaRequest.id)).scalars()
        if within(periods, r.created_at)
        and (periods is None or r.domain_id == caller.domain_id)]
    transfers = [t for t in session.execute(select(SubscriberTransfer).where(
        SubscriberTransfer.subscriber_id == sub.id).order_by(SubscriberTransfer.id)).scalars()
        if periods is None or caller.domain_id in (t.from_domain_id, t.to_domain_id)]
    targets = ([f"subscriber:{sub.id}"] + [f"request:{r.id}" for r in reqs]
               + [f"{c.ca.name}:{c.serial}" for c in certs]
               + [f"transfer:{t.id}" for t in transfers])
    events = [e for e in session.execute(select(AuditEvent).where(
        AuditEvent.target.in_(targets)).order_by(AuditEvent.seq)).scalars()
        if periods is None or (e.domain_id in (None, caller.domain_id) and (
            within(periods, e.at) or (e.target.startswith("transfer:")
                                      and e.domain_id == caller.domain_id)))]
    return {"subscriber": sub, "current": periods is None, "periods": periods,
            "placements": placements, "certificates": certs, "requests": reqs,
            "transfers": transfers, "events": events}
