"""Versioned organisations and per-domain allowances (what each RA domain may request)."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ca.store.base import Base
from ca.store.models import Organization, Subscriber


class OrganizationVersion(Base):
    """What an organisation was between valid_from and valid_to (None: still current).
    Certificates point at the version current when they were issued."""

    __tablename__ = "organization_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organization.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("organization.id"))
    kind: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(default=True)
    merged_into_id: Mapped[Optional[int]] = mapped_column(ForeignKey("organization.id"))
    valid_from: Mapped[dt.datetime]
    valid_to: Mapped[Optional[dt.datetime]]
    created_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[Optional[str]] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("organization_id", "version"),)


class DomainAllowance(Base):
    """The profiles and device types an RA domain may request; no row means everything."""

    __tablename__ = "domain_allowance"
    domain_id: Mapped[int] = mapped_column(ForeignKey("ra_domain.id"), primary_key=True)
    profiles: Mapped[list] = mapped_column(JSON)
    device_types: Mapped[list] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime]
    updated_by: Mapped[str] = mapped_column(String(128))


def current_version(session: Session, org_id: int) -> Optional[OrganizationVersion]:
    return session.execute(select(OrganizationVersion).where(
        OrganizationVersion.organization_id == org_id)
        .order_by(OrganizationVersion.version.desc()).limit(1)).scalar_one_or_none()


def add_first_version(session: Session, org: Organization, *, at: dt.datetime,
                      actor: str = "system:registry") -> OrganizationVersion:
    """Version 1 of a new organisation (also used to backfill rows created before versions)."""
    ver = OrganizationVersion(organization_id=org.id, version=1, name=org.name,
                              parent_id=org.parent_id, kind=org.kind, active=org.active,
                              valid_from=org.created_at or at, valid_to=None, created_by=actor,
                              reason="created")
    session.add(ver)
    session.flush()
    return ver


def subscriber_org_version_id(session: Session, subscriber_id: Optional[int]) -> Optional[int]:
    """The id of the current version of the subscriber's organisation (None if unknown)."""
    if subscriber_id is None:
        return None
    sub = session.get(Subscriber, subscriber_id)
    ver = current_version(session, sub.organization_id) if sub is not None else None
    return ver.id if ver is not None else None
