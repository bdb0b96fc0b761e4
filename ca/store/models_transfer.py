"""Tables of staff transfers: cross-domain releases and the custody history of each subscriber."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ca.store.base import Base
from ca.store.models import Subscriber

TRANSFER_STATES = ("released", "accepted", "withdrawn", "refused")


class SubscriberTransfer(Base):
    """A release of a person by the source RA domain to a destination domain: released ->
    accepted | withdrawn | refused. `open_subscriber_id` holds the subscriber id only while the
    release is open, so a unique constraint allows at most one open release per person (NULLs
    are distinct on every backend)."""

    __tablename__ = "subscriber_transfer"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id"), index=True)
    open_subscriber_id: Mapped[Optional[int]] = mapped_column(Integer, unique=True)
    state: Mapped[str] = mapped_column(String(16), default="released")
    from_domain_id: Mapped[int] = mapped_column(ForeignKey("ra_domain.id"), index=True)
    from_organization_id: Mapped[int] = mapped_column(ForeignKey("organization.id"))
    to_domain_id: Mapped[int] = mapped_column(ForeignKey("ra_domain.id"), index=True)
    to_organization_id: Mapped[int] = mapped_column(ForeignKey("organization.id"))
    reason: Mapped[Optional[str]] = mapped_column(Text)
    released_by: Mapped[str] = mapped_column(String(64))
    released_at: Mapped[dt.datetime]
    accepted_by: Mapped[Optional[str]] = mapped_column(String(64))
    accepted_at: Mapped[Optional[dt.datetime]]
    closed_by: Mapped[Optional[str]] = mapped_column(String(64))  # withdrawn or refused by
    closed_at: Mapped[Optional[dt.datetime]]
    close_note: Mapped[Optional[str]] = mapped_column(Text)

    subscriber: Mapped[Subscriber] = relationship()

    __table_args__ = (
        CheckConstraint("state IN ('released','accepted','withdrawn','refused')", name="state"),
        CheckConstraint("from_domain_id <> to_domain_id", name="other_domain"),
    )


class SubscriberCustody(Base):
    """Where a subscriber was, and under which RA domain, between valid_from and valid_to
    (None: still). Answers "who had the person when"; a former domain reads by these periods."""

    __tablename__ = "subscriber_custody"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id"))
    domain_id: Mapped[int] = mapped_column(ForeignKey("ra_domain.id"), index=True)
    organization_id: Mapped[Optional[int]] = mapped_column(ForeignKey("organization.id"))
    from_domain_id: Mapped[Optional[int]] = mapped_column(Integer)  # the previous custodian
    valid_from: Mapped[dt.datetime]
    valid_to: Mapped[Optional[dt.datetime]]
    transfer_id: Mapped[Optional[int]] = mapped_column(ForeignKey("subscriber_transfer.id"))
    recorded_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[Optional[str]] = mapped_column(String(64))  # created | unit | transfer | reorg

    __table_args__ = (Index("ix_subscriber_custody_subscriber", "subscriber_id", "valid_from"),)
