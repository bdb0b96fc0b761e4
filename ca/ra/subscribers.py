"""Subscribers seen through the caller's scope: search, registration (Form 01) and transfer."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.errors import InvalidInput, NotFound, PermissionDenied
from ca.names import fold
from ca.ra.form01 import parse_form01
from ca.ra.roles import Caller
from ca.ra.scope import Scope
from ca.ra.workdays import VN_TZ as _VN
from ca.registry import add_subscriber
from ca.store.models import Organization, RaDomain, Subscriber

MAX_PAGE = 200


@dataclass(frozen=True)
class Page:
    items: list
    page: int
    per_page: int
    total: int


def search_text(q: str | None) -> str | None:
    """The folded search key: 'Nguyen' and 'Nguyễn' both become 'nguyen'."""
    if q is None:
        return None
    q = fold(" ".join(str(q).split()))[:100]
    return q or None


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_DOMAIN_STATUS = select(RaDomain.__table__.c.status).where(
    RaDomain.__table__.c.id == bindparam("domain_id"))


def require_active_domain(session: Session, caller: Caller) -> None:
    """A suspended domain's officers can read but not act. Runs on every RA write (twice per
    API batch call): the domain already loaded in this session is read as `session.get` would
    (changes not yet flushed included), else its status alone by one prepared Core
    statement, without loading an ORM object."""
    if caller.domain_id is None:
        return
    dom = session.identity_map.get(session.identity_key(RaDomain, caller.domain_id))
    if dom is not None:
        status = dom.status
    else:
        status = session.connection().execute(
            _DOMAIN_STATUS, {"domain_id": caller.domain_id}).scalar()
    if status != "active":
        raise PermissionDenied("the delegation of this RA domain is suspended",
                               code="domain_suspended")


def list_organizations(session: Session, caller: Caller, q: str | None = None) -> list:
    scope = Scope(session, caller)
    stmt = select(Organization).where(scope.organizations())
    term = search_text(q)
    rows = session.execute(stmt.order_by(Organization.domain_id, Organization.id)).scalars().all()
    if term:
        rows = [o for o in rows if term in fold(o.name)]
    return rows


def search_subscribers(session: Session, caller: Caller, *, q: str | None = None,
                       organization_id: int | None = None, page: int = 1,
                       per_page: int = 50) -> Page:
    scope = Scope(session, caller)
    if page < 1 or not 1 <= per_page <= MAX_PAGE:
        raise InvalidInput(f"page >= 1 and 1 <= per_page <= {MAX_PAGE}", field="per_page")
    stmt = select(Subscriber).where(scope.subscribers())
    term = search_text(q)
    if term:
        like = _like(term)
        stmt = stmt.where(or_(Subscriber.search_name.like(like, escape="\\"),
                              Subscriber.id_number == term.upper(),
                              func.lower(Subscriber.email).like(like, escape="\\")))
    if organization_id is not None:
        stmt = stmt.where(Subscriber.organization_id == organization_id)
    total = session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    items = session.execute(stmt.order_by(Subscriber.search_name, Subscriber.id)
                            .limit(per_page).offset((page - 1) * per_page)).scalars().all()
    return Page(items=list(items), page=page, per_page=per_page, total=total)


def register(session: Session, clock: Clock, caller: Caller, body) -> Subscriber:
    """Form 01: validate everything, then store; an organisation outside the scope is refused
    as unknown."""
    caller.require("subscriber.write")
    require_active_domain(session, caller)
    now = clock.now()
    form = parse_form01(body, (now.astimezone(_VN)).date())
    try:
        org = Scope(session, caller).organization(form.organization_id)
    except NotFound:
        raise InvalidInput(f"unknown organisation {form.organization_id}",
                           field="organization_id", code="unknown_organization") from None
    if not org.active:
        raise InvalidInput("the organisation is no longer active", field="organization_id",
                           code="inactive_organization")
    return add_subscriber(session, organization_id=org.id, full_name=form.full_name,
                          id_number=form.id_number, id_type=form.id_type, email=form.email,
                          at=now, actor=caller.actor, kind=form.kind,
                          date_of_birth=form.date_of_birth, position=form.position,
                          mobile=form.mobile, device_type=form.device_type)


def transfer(session: Session, clock: Clock, caller: Caller, subscriber_id: int,
             organization_id) -> tuple[Subscriber, int]:
    """Move a subscriber to another organisation of the same domain. Returns the subscriber and
    the previous organisation id; certificates then need a change of information."""
    scope = Scope(session, caller)
    sub = scope.subscriber(subscriber_id)
    caller.require("subscriber.write")
    require_active_domain(session, caller)
    if isinstance(organization_id, bool) or not isinstance(organization_id, int):
        raise InvalidInput("organization_id must be a positive integer",
                           field="organization_id", code="wrong_type")
    try:
        org = scope.organization(organization_id)
    except NotFound:
        raise InvalidInput(f"unknown organisation {organization_id}", field="organization_id",
                           code="unknown_organization") from None
    if org.domain_id != sub.domain_id:
        raise InvalidInput("a transfer to another RA domain is a cross-domain transfer, "
                           "not supported here", field="organization_id",
                           code="cross_domain_transfer")
    if org.id == sub.organization_id:
        raise InvalidInput("the subscriber is already in this organisation",
                           field="organization_id", code="no_change")
    old = sub.organization_id
    now = clock.now()
    sub.organization_id = org.id
    sub.updated_at = now
    audit.record(session, "subscriber.transfer", actor=caller.actor, at=now,
                 target=f"subscriber:{sub.id}", domain_id=sub.domain_id,
                 details={"from": old, "to": org.id})
    return sub, old

