"""Organisations and subscribers: the small part the CA core needs (the RA portal extends it)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ca import audit
from ca.errors import Conflict, InvalidInput, NotFound
from ca.names import clean_text, fold
from ca.store.models import Organization, RaDomain, Subscriber
from ca.store.models_org import add_first_version

DEVICE_TYPES = ("TOKEN", "SIM", "SOFT", "RSSP", "HSM")


def find_subscriber(session: Session, ref: str | int) -> Subscriber:
    """A subscriber by numeric id or by staff username (`--subscriber` in the CLI)."""
    text = str(ref).strip()
    cond = Subscriber.username == text
    if text.isdigit():
        cond = or_(Subscriber.id == int(text), cond)
    sub = session.execute(select(Subscriber).where(cond)).scalars().first()
    if sub is None:
        raise NotFound(f"no subscriber with id or username {text!r}", field="subscriber")
    return sub


def add_domain(session: Session, *, code: str, name: str, kind: str, locality: str,
               at: dt.datetime) -> RaDomain:
    dom = RaDomain(code=code, name=clean_text(name, field_name="name", max_chars=128), kind=kind,
                   locality=clean_text(locality, field_name="locality", max_chars=128),
                   status="active", created_at=at)
    session.add(dom)
    session.flush()
    return dom


def add_organization(session: Session, *, domain: RaDomain, name: str, kind: str,
                     parent: Organization | None, at: dt.datetime) -> Organization:
    if parent is not None and parent.domain_id != domain.id:
        raise InvalidInput("a parent organisation must be in the same domain", field="parent_id")
    level = (parent.level + 1) if parent is not None else 1
    if kind == "agency" and level > 4:
        raise InvalidInput("agencies nest at most 4 levels deep", field="parent_id")
    org = Organization(domain_id=domain.id, parent_id=parent.id if parent else None, kind=kind,
                       level=level, name=clean_text(name, field_name="name", max_chars=200),
                       active=True, created_at=at)
    session.add(org)
    session.flush()
    add_first_version(session, org, at=at)  # organisation versions (models_org)
    return org


def add_subscriber(session: Session, *, organization_id: int, full_name: str, id_number: str,
                   email: str | None, at: dt.datetime, actor: str, kind: str = "person",
                   id_type: str = "CCCD", username: str | None = None,
                   date_of_birth: dt.date | None = None, position: str | None = None,
                   mobile: str | None = None, device_type: str = "TOKEN") -> Subscriber:
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"no organisation with id {organization_id}", field="organization_id")
    if device_type not in DEVICE_TYPES:
        raise InvalidInput(f"device type must be one of {', '.join(DEVICE_TYPES)}",
                           field="device_type")
    name = clean_text(full_name, field_name="full_name", max_chars=64)
    if session.execute(select(Subscriber.id).where(Subscriber.id_type == id_type,
                                                   Subscriber.id_number == id_number)).first():
        raise Conflict(f"a subscriber with {id_type} {id_number} is already registered",
                       field="id_number", code="duplicate_subscriber")
    sub = Subscriber(kind=kind, domain_id=org.domain_id, organization_id=org.id, full_name=name,
                     search_name=fold(name), id_type=id_type, id_number=id_number,
                     date_of_birth=date_of_birth, email=email, mobile=mobile, position=position,
                     device_type=device_type, username=username, created_at=at, updated_at=at)
    session.add(sub)
    session.flush()
    audit.record(session, "subscriber.create", actor=actor, at=at, target=f"subscriber:{sub.id}",
                 domain_id=sub.domain_id, details={"organization_id": org.id, "kind": kind})
    return sub
