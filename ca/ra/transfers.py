"""Transfers of one person: within a domain (move + change requests) and between domains
(release by the source, accept/refuse by the destination, withdraw by the source), with the
custody history that says which RA domain had the person when. Rules: docs/transfers.md."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.errors import CAError, Conflict, InvalidInput, NotFound, PermissionDenied
from ca.names import clean_text
from ca.ra import requests as ra_requests
from ca.ra.custody import custody_history, history, record_custody_change  # noqa: F401
from ca.ra import subscribers as ra_subscribers
from ca.ra.roles import Caller
from ca.ra.scope import Scope, _fits
from ca.ra.subscribers import require_active_domain
from ca.store.models import Certificate, Organization, RaDomain, Subscriber
from ca.store.models_ra import RaRequest, RaUser
from ca.store.models_tokens import KeyDevice
from ca.store.models_transfer import SubscriberTransfer

OPEN_REQUEST_STATES = ("draft", "submitted", "approved")
DIRECTIONS = ("incoming", "outgoing")


@dataclass
class Moved:
    """A transfer inside the domain: the person moved and change requests were raised."""
    subscriber: Subscriber
    previous_organization_id: int
    change_requests: list[RaRequest] = field(default_factory=list)
    not_changed: list[dict] = field(default_factory=list)  # serial + why no request


@dataclass
class Accepted:
    transfer: SubscriberTransfer
    change_requests: list[RaRequest] = field(default_factory=list)
    not_changed: list[dict] = field(default_factory=list)
    moved_requests: list[int] = field(default_factory=list)
    moved_devices: list[int] = field(default_factory=list)


# --- inputs -------------------------------------------------------------------------------
def _org_id(value: Any, name: str = "organization_id") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a positive integer", field=name, code="wrong_type")
    return value


def _note(value: Any, name: str = "reason", required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise InvalidInput(f"{name} is required", field=name, code="required")
        return None
    return clean_text(value, field_name=name, max_chars=500)


def open_release(session: Session, subscriber_id: int) -> SubscriberTransfer | None:
    return session.execute(select(SubscriberTransfer).where(
        SubscriberTransfer.subscriber_id == subscriber_id,
        SubscriberTransfer.state == "released")).scalars().first()


def _destination(session: Session, scope: Scope, sub: Subscriber, org_id: int) -> Organization:
    """The unit asked for: inside the caller's scope, or any unit of another RA domain (the
    organisation directory of the State is not secret; its people are)."""
    try:
        return scope.organization(org_id)
    except NotFound:
        pass
    org = session.get(Organization, org_id) if _fits(org_id) else None
    if org is None or org.domain_id == sub.domain_id:
        raise InvalidInput(f"unknown organisation {org_id}", field="organization_id",
                           code="unknown_organization")
    return org


def _valid_certificates(session: Session, sub_id: int, now: dt.datetime) -> list[Certificate]:
    return list(session.execute(select(Certificate).where(
        Certificate.subscriber_id == sub_id, Certificate.state == "issued",
        Certificate.revoked_at.is_(None), Certificate.not_after > now)
        .order_by(Certificate.id)).scalars())


def raise_change_requests(session: Session, clock: Clock, caller: Caller, sub: Subscriber,
                          profiles: dict) -> tuple[list[RaRequest], list[dict]]:
    """A submitted `change` request (affiliationChanged, same key, same expiry) for every valid
    certificate of the subscriber. A certificate that cannot get one (an open change already,
    a profile the domain may not request …) is listed with the reason instead."""
    now = clock.now()
    raised, skipped = [], []
    for cert in _valid_certificates(session, sub.id, now):
        try:
            with session.begin_nested():
                req = ra_requests.create(session, clock, caller, {
                    "type": "change", "subscriber_id": sub.id, "serial": cert.serial,
                    "reason": "affiliationChanged"}, profiles)
            raised.append(req)
        except CAError as exc:
            skipped.append({"serial": cert.serial, "code": exc.code, "message": exc.message})
    return raised, skipped


# --- within the domain, or the start of a release -----------------------------------------
def transfer(session: Session, clock: Clock, caller: Caller, subscriber_id: int,
             organization_id: Any, profiles: dict, *, reason: Any = None
             ) -> Moved | SubscriberTransfer:
    """Move the person to `organization_id`: inside the domain it moves at once and raises the
    change requests; a unit of another RA domain starts a release (the person stays here until
    the destination accepts)."""
    scope = Scope(session, caller)
    sub = scope.subscriber(subscriber_id)
    caller.require("subscriber.write")
    require_active_domain(session, caller)
    org_id = _org_id(organization_id)
    if org_id == sub.organization_id:
        raise InvalidInput("the subscriber is already in this organisation",
                           field="organization_id", code="no_change")
    org = _destination(session, scope, sub, org_id)
    note = _note(reason)
    if open_release(session, sub.id) is not None:
        raise Conflict("the subscriber has a pending release to another RA domain; withdraw it "
                       "first", field="subscriber_id", code="transfer_pending")
    if not org.active:
        raise InvalidInput("the organisation is no longer active", field="organization_id",
                           code="inactive_organization")
    if org.domain_id != sub.domain_id:
        if sub.kind != "person":  # seals and devices follow their agency (reorganisations)
            raise InvalidInput("only a person is released to another RA domain",
                               field="subscriber_id", code="not_a_person")
        return release(session, clock, caller, sub, org, note)
    now = clock.now()
    from_domain = sub.domain_id
    sub, old = ra_subscribers.transfer(session, clock, caller, sub.id, org.id)
    record_custody_change(session, sub.id, from_domain, from_domain, now, caller.actor,
                          from_organization_id=old, to_organization_id=org.id, reason="unit",
                          audit_event=False)  # subscriber.transfer is the audit event
    raised, skipped = raise_change_requests(session, clock, caller, sub, profiles)
    return Moved(subscriber=sub, previous_organization_id=old, change_requests=raised,
                 not_changed=skipped)


def release(session: Session, clock: Clock, caller: Caller, sub: Subscriber,
            org: Organization, note: str | None) -> SubscriberTransfer:
    dest = session.get(RaDomain, org.domain_id)
    if dest is None or dest.status != "active":
        state = dest.status if dest else "unknown"
        raise InvalidInput(f"the destination RA domain is {state}; a person can only be "
                           f"released to an active domain", field="organization_id",
                           code="domain_unavailable")
    now = clock.now()
    t = SubscriberTransfer(subscriber_id=sub.id, open_subscriber_id=sub.id, state="released",
                           from_domain_id=sub.domain_id, from_organization_id=sub.organization_id,
                           to_domain_id=dest.id, to_organization_id=org.id, reason=note,
                           released_by=caller.username, released_at=now)
    try:
        with session.begin_nested():
            session.add(t)
            session.flush()
    except sa_exc.IntegrityError:  # a release raced this one and won
        raise Conflict("the subscriber has a pending release to another RA domain",
                       field="subscriber_id", code="transfer_pending") from None
    details = {"transfer_id": t.id, "subscriber_id": sub.id, "from_domain": t.from_domain_id,
               "to_domain": dest.id, "to_organization_id": org.id, "reason": note}
    audit.record(session, "transfer.release", actor=caller.actor, at=now,
                 target=f"subscriber:{sub.id}", domain_id=t.from_domain_id, details=details)
    audit.record(session, "transfer.incoming", actor=caller.actor, at=now,
                 target=f"transfer:{t.id}", domain_id=dest.id,
                 details={"transfer_id": t.id, "from_domain": t.from_domain_id,
                          "to_organization_id": org.id})
    return t


# --- the release and its answers ----------------------------------------------------------
def _side(scope: Scope, caller: Caller, t: SubscriberTransfer) -> str | None:
    """'central', 'source' or 'destination' (as seen by the caller), None when not visible."""
    if scope.everything:
        return "central"
    if scope.self_only or caller.domain_id is None:
        return None
    if t.from_domain_id == caller.domain_id and (
            scope.org_ids is None or t.from_organization_id in scope.org_ids):
        return "source"
    if t.to_domain_id == caller.domain_id and (
            scope.org_ids is None or t.to_organization_id in scope.org_ids):
        return "destination"
    return None


def get_transfer(session: Session, caller: Caller, transfer_id: int
                 ) -> tuple[SubscriberTransfer, str]:
    """The transfer and the caller's side of it; anyone else hears 'no transfer'."""
    scope = Scope(session, caller)
    t = session.get(SubscriberTransfer, transfer_id) if _fits(transfer_id) else None
    side = _side(scope, caller, t) if t is not None else None
    if side is None:
        raise NotFound(f"no transfer with id {transfer_id}", field="transfer_id")
    return t, side


def _closed(t: SubscriberTransfer) -> Conflict:
    what = {"accepted": f"already accepted by {t.accepted_by}",
            "withdrawn": "withdrawn by the source RA", "refused": "refused by the destination RA"}
    return Conflict(f"transfer {t.id} was {what.get(t.state, t.state)}; nothing changed",
                    code=f"transfer_{t.state}")


def _decide(session: Session, t: SubscriberTransfer, state: str, caller: Caller,
            now: dt.datetime, note: str | None) -> None:
    result = session.execute(update(SubscriberTransfer).where(
        SubscriberTransfer.id == t.id, SubscriberTransfer.state == "released").values(
        state=state, open_subscriber_id=None, closed_by=caller.username, closed_at=now,
        close_note=note))
    if result.rowcount != 1:
        session.refresh(t)
        raise _closed(t)
    session.refresh(t)


def _audit_both(session: Session, t: SubscriberTransfer, action: str, caller: Caller,
                now: dt.datetime, details: dict) -> None:
    """One event in each domain's trail: both parties see what happened."""
    for dom in (t.from_domain_id, t.to_domain_id):
        audit.record(session, action, actor=caller.actor, at=now, target=f"transfer:{t.id}",
                     domain_id=dom, details={"transfer_id": t.id, "subscriber_id": t.subscriber_id,
                                             "from_domain": t.from_domain_id,
                                             "to_domain": t.to_domain_id, **details})


def _close(session: Session, clock: Clock, caller: Caller, transfer_id: int, note: Any, *,
           state: str, not_side: str, refusal: PermissionDenied) -> SubscriberTransfer:
    """Withdraw (source) or refuse (destination) a pending release, audited on both sides."""
    t, side = get_transfer(session, caller, transfer_id)
    caller.require("subscriber.write")
    require_active_domain(session, caller)
    if side == not_side:
        raise refusal
    text = _note(note, "note")
    if t.state != "released":
        raise _closed(t)
    now = clock.now()
    _decide(session, t, state, caller, now, text)
    action = "transfer.withdraw" if state == "withdrawn" else "transfer.refuse"
    _audit_both(session, t, action, caller, now, {"note": text})
    return t


def withdraw(session: Session, clock: Clock, caller: Caller, transfer_id: int,
             note: Any = None) -> SubscriberTransfer:
    return _close(session, clock, caller, transfer_id, note, state="withdrawn",
                  not_side="destination", refusal=PermissionDenied(
                      "only the source RA domain withdraws a release; the destination refuses "
                      "it", code="not_source"))


def refuse(session: Session, clock: Clock, caller: Caller, transfer_id: int,
           note: Any = None) -> SubscriberTransfer:
    return _close(session, clock, caller, transfer_id, note, state="refused", not_side="source",
                  refusal=PermissionDenied("only the destination RA domain refuses a release; "
                                           "the source withdraws it", code="not_destination"))


def accept(session: Session, clock: Clock, caller: Caller, transfer_id: int, profiles: dict,
           *, organization_id: Any = None) -> Accepted:
    """The destination takes the person: subscriber, open requests and key devices move, the
    custody changes and both domains' trails record it, all in the caller's transaction; then
    the change requests (new L/O/OU, same key, same expiry) are raised in the destination."""
    t, side = get_transfer(session, caller, transfer_id)
    caller.require("subscriber.write")
    require_active_domain(session, caller)
    if side == "source":
        raise PermissionDenied("only an officer of the destination RA domain accepts a release",
                               code="not_destination")
    if caller.username == t.released_by:
        raise PermissionDenied("the officer who released the person cannot also accept the "
                               "release (two parties)", code="own_release")
    if t.state != "released":
        raise _closed(t)
    dest = session.get(RaDomain, t.to_domain_id)
    if dest is None or dest.status != "active":
        raise Conflict(f"the destination RA domain is {dest.status if dest else 'unknown'}",
                       code="domain_unavailable")
    org_id = t.to_organization_id
    if organization_id is not None:  # the destination may place the person in another unit
        org_id = _org_id(organization_id)
        org = session.get(Organization, org_id) if _fits(org_id) else None
        scope = Scope(session, caller)
        if org is None or org.domain_id != t.to_domain_id or (
                scope.org_ids is not None and org.id not in scope.org_ids):
            raise InvalidInput(f"unknown organisation {org_id} in the destination domain",
                               field="organization_id", code="unknown_organization")
    org = session.get(Organization, org_id)
    if not org.active:
        raise InvalidInput("the destination organisation is no longer active",
                           field="organization_id", code="inactive_organization")
    sub = session.get(Subscriber, t.subscriber_id)
    if sub.domain_id != t.from_domain_id:
        raise Conflict("the person is no longer under the releasing RA domain", code="stale")
    now = clock.now()
    result = session.execute(update(SubscriberTransfer).where(
        SubscriberTransfer.id == t.id, SubscriberTransfer.state == "released").values(
        state="accepted", open_subscriber_id=None, accepted_by=caller.username,
        accepted_at=now, to_organization_id=org.id))
    if result.rowcount != 1:
        session.refresh(t)
        raise _closed(t)
    session.refresh(t)
    old_org = sub.organization_id
    sub.domain_id, sub.organization_id, sub.updated_at = dest.id, org.id, now
    moved_requests = list(session.execute(select(RaRequest.id).where(
        RaRequest.subscriber_id == sub.id, RaRequest.state.in_(OPEN_REQUEST_STATES))).scalars())
    if moved_requests:
        session.execute(update(RaRequest).where(RaRequest.id.in_(moved_requests))
                        .values(domain_id=dest.id))
    devices = list(session.execute(select(KeyDevice.id).where(
        KeyDevice.holder_id == sub.id)).scalars())
    if devices:
        session.execute(update(KeyDevice).where(KeyDevice.id.in_(devices))
                        .values(domain_id=dest.id))
    session.execute(update(RaUser).where(RaUser.subscriber_id == sub.id,
                                         RaUser.role == "subscriber").values(domain_id=dest.id))
    session.flush()
    record_custody_change(session, sub.id, t.from_domain_id, dest.id, now, caller.actor,
                          from_organization_id=old_org, to_organization_id=org.id,
                          transfer_id=t.id, reason="transfer", audit_event=False)
    _audit_both(session, t, "transfer.accept", caller, now, {
        "released_by": t.released_by, "to_organization_id": org.id,
        "moved_requests": moved_requests, "moved_devices": devices})
    audit.record(session, "subscriber.transfer", actor=caller.actor, at=now,
                 target=f"subscriber:{sub.id}", domain_id=dest.id,
                 details={"from": old_org, "to": org.id, "from_domain": t.from_domain_id,
                          "to_domain": dest.id, "transfer_id": t.id})
    raised, skipped = raise_change_requests(session, clock, caller, sub, profiles)
    return Accepted(transfer=t, change_requests=raised, not_changed=skipped,
                    moved_requests=moved_requests, moved_devices=devices)


def list_transfers(session: Session, caller: Caller, direction: str | None = None,
                   state: str | None = None) -> list[tuple[SubscriberTransfer, str]]:
    """Releases the caller's domain made (outgoing) or received (incoming), newest first."""
    if direction is not None and direction not in DIRECTIONS:
        raise InvalidInput("direction is incoming or outgoing", field="direction")
    scope = Scope(session, caller)
    stmt = select(SubscriberTransfer)
    if not scope.everything:
        if scope.self_only or caller.domain_id is None:
            return []
        sides = []
        if direction in (None, "outgoing"):
            sides.append(SubscriberTransfer.from_domain_id == caller.domain_id)
        if direction in (None, "incoming"):
            sides.append(SubscriberTransfer.to_domain_id == caller.domain_id)
        stmt = stmt.where(or_(*sides))
    if state is not None:
        stmt = stmt.where(SubscriberTransfer.state == state)
    rows = session.execute(stmt.order_by(SubscriberTransfer.id.desc()).limit(500)).scalars()
    out = []
    for t in rows:
        side = _side(scope, caller, t)
        if side is None:
            continue
        out.append((t, side))
    return out


def transfer_dict(session: Session, t: SubscriberTransfer, side: str) -> dict[str, Any]:
    """The transfer as the caller may see it. Before acceptance the destination sees only what
    it needs to decide: the person's name and position and the source domain's name."""
    iso = lambda v: v.isoformat() if v else None  # noqa: E731
    sub = session.get(Subscriber, t.subscriber_id)
    src = session.get(RaDomain, t.from_domain_id)
    dst = session.get(RaDomain, t.to_domain_id)
    to_org = session.get(Organization, t.to_organization_id)
    d = {"id": t.id, "state": t.state, "direction": "incoming" if side == "destination"
         else "outgoing" if side == "source" else "central",
         "full_name": sub.full_name, "position": sub.position,
         "from_domain_name": src.name, "to_domain_name": dst.name,
         "to_organization_id": t.to_organization_id, "to_organization_name": to_org.name,
         "reason": t.reason, "released_by": t.released_by, "released_at": iso(t.released_at),
         "accepted_by": t.accepted_by, "accepted_at": iso(t.accepted_at),
         "closed_by": t.closed_by, "closed_at": iso(t.closed_at), "note": t.close_note}
    if side != "destination" or t.state == "accepted":
        from_org = session.get(Organization, t.from_organization_id)
        d.update(subscriber_id=t.subscriber_id, from_organization_id=t.from_organization_id,
                 from_organization_name=from_org.name)
    return d


def destination_units(session: Session, caller: Caller, domain_id: Any) -> list[Organization]:
    """The active units of another active RA domain, to choose where a person goes."""
    if not isinstance(domain_id, int) or not _fits(domain_id):
        raise InvalidInput("choose an RA domain", field="domain_id")
    dom = session.get(RaDomain, domain_id)
    if dom is None or dom.status != "active":
        raise InvalidInput("unknown or inactive RA domain", field="domain_id",
                           code="domain_unavailable")
    return list(session.execute(select(Organization).where(
        Organization.domain_id == dom.id, Organization.active.is_(True))
        .order_by(Organization.level, Organization.name)).scalars())


def other_domains(session: Session, caller: Caller) -> list[RaDomain]:
    return list(session.execute(select(RaDomain).where(
        RaDomain.status == "active", RaDomain.id != (caller.domain_id or -1))
        .order_by(RaDomain.name)).scalars())
