"""The e-mail outbox (docs/notices.md): a notice is written in the transaction of the change it
reports and delivered after commit (then retried by the scheduler), so a crash after commit
still delivers it and a failing SMTP server never fails the change."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ca.store.base import Base

OUTBOX_STATES = ("pending", "sending", "sent", "dead")


class NoticeOutbox(Base):
    __tablename__ = "notice_outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event: Mapped[str] = mapped_column(String(48))  # request.issued, certificate.revoked, ...
    ref: Mapped[str] = mapped_column(String(96))  # request:12, certificate:<serial>
    domain_id: Mapped[Optional[int]] = mapped_column(Integer)
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime]
    next_attempt_at: Mapped[dt.datetime]
    lease_until: Mapped[Optional[dt.datetime]]  # a sender holds the row until then
    sent_at: Mapped[Optional[dt.datetime]]
    last_error: Mapped[Optional[str]] = mapped_column(String(200))  # exception class, no text

    __table_args__ = (
        CheckConstraint("state IN ('pending','sending','sent','dead')", name="state"),
        Index("ix_notice_outbox_due", "state", "next_attempt_at"),
    )
