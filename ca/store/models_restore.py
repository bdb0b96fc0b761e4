"""Restore (key-device PIN reset) requests: the device concerned and the recorded identity check."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ca.store.base import Base
from ca.store.models_ra import RaRequest  # noqa: F401  (ra_request must be in the metadata)
from ca.store.models_tokens import KeyDevice  # noqa: F401

IDENTITY_METHODS = ("cccd_in_person", "video_call", "agency_letter")
_METHODS_SQL = ",".join(f"'{m}'" for m in IDENTITY_METHODS)


class RestoreRequest(Base):
    """One `restore` RA request: which device, who checked the holder's identity, how, when,
    and (where policy wants two approvers) the first approval."""

    __tablename__ = "restore_request"
    request_id: Mapped[int] = mapped_column(ForeignKey("ra_request.id"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("key_device.id"), index=True)
    identity_checked_by: Mapped[Optional[str]] = mapped_column(String(64))
    identity_method: Mapped[Optional[str]] = mapped_column(String(32))
    identity_checked_at: Mapped[Optional[dt.datetime]]
    identity_recorded_at: Mapped[Optional[dt.datetime]]
    identity_note: Mapped[Optional[str]] = mapped_column(Text)
    first_approved_by: Mapped[Optional[str]] = mapped_column(String(64))
    first_approved_at: Mapped[Optional[dt.datetime]]
    authorisation_id: Mapped[Optional[int]] = mapped_column(Integer)  # the code's row, never it
    code_expires_at: Mapped[Optional[dt.datetime]]

    __table_args__ = (
        CheckConstraint(f"identity_method IS NULL OR identity_method IN ({_METHODS_SQL})",
                        name="identity_method"),
    )
