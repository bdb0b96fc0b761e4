"""Tables of the delegated RA: portal users, API tokens, requests and the holiday calendar."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Date, ForeignKey, Index, Integer,
                        String, Text)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ca.store.base import Base
from ca.store.models import Organization, RaDomain, Subscriber

ROLES = ("central_operator", "central_auditor", "ra_officer", "ra_approver", "subscriber")
REQUEST_TYPES = ("issue", "renew", "change", "revoke", "restore")
REQUEST_STATES = ("draft", "submitted", "approved", "rejected", "issued", "done", "failed")


class RaUser(Base):
    """A person who logs in: central staff, a domain's officers and approvers, or a subscriber."""

    __tablename__ = "ra_user"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(24))
    domain_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ra_domain.id"), index=True)
    organization_id: Mapped[Optional[int]] = mapped_column(ForeignKey("organization.id"))
    subscriber_id: Mapped[Optional[int]] = mapped_column(ForeignKey("subscriber.id"), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)  # argon2id
    totp_secret: Mapped[Optional[str]] = mapped_column(String(64))
    totp_last_step: Mapped[Optional[int]] = mapped_column(BigInteger)  # refuses a replayed code
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[Optional[dt.datetime]]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    auth_epoch: Mapped[int] = mapped_column(Integer, default=1)  # bump to end every session
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    last_login_at: Mapped[Optional[dt.datetime]]
    email: Mapped[Optional[str]] = mapped_column(String(254))  # e-mail notices (docs/notices.md)

    domain: Mapped[Optional[RaDomain]] = relationship()
    organization: Mapped[Optional[Organization]] = relationship()
    subscriber: Mapped[Optional[Subscriber]] = relationship()

    __table_args__ = (
        CheckConstraint("role IN ('central_operator','central_auditor','ra_officer',"
                        "'ra_approver','subscriber')", name="role"),
    )


class ApiToken(Base):
    """A bearer token for integrations; only its SHA-256 is stored. Scoped like its owner."""

    __tablename__ = "ra_api_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("ra_user.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings, not a secret
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[Optional[dt.datetime]]
    last_used_at: Mapped[Optional[dt.datetime]]
    revoked_at: Mapped[Optional[dt.datetime]]

    user: Mapped[RaUser] = relationship()


class RaRequest(Base):
    """A certificate service request (yêu cầu chứng thực) and its approvals."""

    __tablename__ = "ra_request"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    domain_id: Mapped[int] = mapped_column(ForeignKey("ra_domain.id"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id"), index=True)
    profile: Mapped[Optional[str]] = mapped_column(String(32))
    csr_pem: Mapped[Optional[str]] = mapped_column(Text)
    target_serial: Mapped[Optional[str]] = mapped_column(String(40))  # renew/change/revoke
    reason: Mapped[Optional[str]] = mapped_column(String(32))
    validity_days: Mapped[Optional[int]] = mapped_column(Integer)
    central_required: Mapped[bool] = mapped_column(Boolean, default=False)
    certificate_serial: Mapped[Optional[str]] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    submitted_by: Mapped[Optional[str]] = mapped_column(String(64))
    submitted_at: Mapped[Optional[dt.datetime]]
    due_at: Mapped[Optional[dt.datetime]]
    approved_by: Mapped[Optional[str]] = mapped_column(String(64))
    approved_at: Mapped[Optional[dt.datetime]]
    central_approved_by: Mapped[Optional[str]] = mapped_column(String(64))
    central_approved_at: Mapped[Optional[dt.datetime]]
    decided_by: Mapped[Optional[str]] = mapped_column(String(64))  # rejected by
    decided_at: Mapped[Optional[dt.datetime]]
    decision_note: Mapped[Optional[str]] = mapped_column(Text)
    completed_at: Mapped[Optional[dt.datetime]]
    failure_reason: Mapped[Optional[str]] = mapped_column(Text)

    subscriber: Mapped[Subscriber] = relationship()

    __table_args__ = (
        CheckConstraint("type IN ('issue','renew','change','revoke','restore')", name="type"),
        CheckConstraint("state IN ('draft','submitted','approved','rejected','issued','done',"
                        "'failed')", name="state"),
        Index("ix_ra_request_domain_state", "domain_id", "state"),
        Index("ix_ra_request_state_due", "state", "due_at"),
    )


class RaHoliday(Base):
    """A public holiday (or compensatory day off) that is not a working day."""

    __tablename__ = "ra_holiday"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, unique=True)
    name: Mapped[str] = mapped_column(String(128))
