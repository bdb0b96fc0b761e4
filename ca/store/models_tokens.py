"""Tables of the key-device registry: devices, their certificates, SO-PIN escrow, unblock codes."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer,
                        LargeBinary, String, Text, UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ca.store.base import Base
from ca.store.models import Certificate, Subscriber

DEVICE_STATES = ("new", "initialised", "issued", "locked", "restored", "retired", "lost",
                 "destroyed")
_STATES_SQL = ",".join(f"'{s}'" for s in DEVICE_STATES)


class KeyDevice(Base):
    """A key device (USB token, SIM, soft key, remote RSSP/HSM key) and its lifecycle state."""

    __tablename__ = "key_device"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_type: Mapped[str] = mapped_column(String(16))  # TOKEN | SIM | SOFT | RSSP | HSM
    # CK_TOKEN_INFO.serialNumber for tokens; a GovCA reference for remote keys. Unknown (NULL)
    # until a token is initialised when the hardware does not report one before.
    serial: Mapped[Optional[str]] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64))
    manufacturer: Mapped[str] = mapped_column(String(64), default="")
    model: Mapped[str] = mapped_column(String(64), default="")
    holder_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id"), index=True)
    domain_id: Mapped[int] = mapped_column(Integer, index=True)  # the holder's RA domain
    state: Mapped[str] = mapped_column(String(16), default="new")
    state_reason: Mapped[Optional[str]] = mapped_column(Text)
    state_changed_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime]

    holder: Mapped[Subscriber] = relationship()

    __table_args__ = (
        UniqueConstraint("manufacturer", "model", "serial"),
        CheckConstraint(f"state IN ({_STATES_SQL})", name="state"),
        CheckConstraint("device_type IN ('TOKEN','SIM','SOFT','RSSP','HSM')", name="device_type"),
    )


class KeyDeviceCertificate(Base):
    """A certificate whose private key lives on a device."""

    __tablename__ = "key_device_certificate"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("key_device.id"), index=True)
    certificate_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("certificate.id"), unique=True)
    key_ref: Mapped[Optional[str]] = mapped_column(String(64))  # CKA_ID on the token, hex
    attached_at: Mapped[dt.datetime]

    certificate: Mapped[Certificate] = relationship()


class SoPinEscrow(Base):
    """A token's SO PIN, only as AES-GCM ciphertext under a wrapping key inside the CA's HSM."""

    __tablename__ = "so_pin_escrow"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("key_device.id"), unique=True)
    key_label: Mapped[str] = mapped_column(String(64))  # the wrapping key in the CA token
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)  # includes the GCM tag
    created_at: Mapped[dt.datetime]
    released_count: Mapped[int] = mapped_column(Integer, default=0)
    # A replacement SO PIN escrowed before the token's SO PIN is changed (rotation after each
    # unblock); it becomes the current one when the workstation confirms the change.
    pending_nonce: Mapped[Optional[bytes]] = mapped_column(LargeBinary)
    pending_ciphertext: Mapped[Optional[bytes]] = mapped_column(LargeBinary)
    pending_at: Mapped[Optional[dt.datetime]]


class UnblockAuthorisation(Base):
    """A one-time unblock code, stored as SHA-256 of a high-entropy code, bound to a device."""

    __tablename__ = "unblock_authorisation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("key_device.id"), index=True)
    device_serial: Mapped[str] = mapped_column(String(64))
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(16), default="token")  # token | remote
    request_ref: Mapped[Optional[str]] = mapped_column(String(64))  # the restore request
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    consumed_at: Mapped[Optional[dt.datetime]]
    consumed_by: Mapped[Optional[str]] = mapped_column(String(128))
    cancelled_at: Mapped[Optional[dt.datetime]]

    __table_args__ = (CheckConstraint("purpose IN ('token','remote')", name="purpose"),)


class UnblockAttempt(Base):
    """Every presentation of an unblock code, for rate limiting and the alert."""

    __tablename__ = "unblock_attempt"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_serial: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime]
    outcome: Mapped[str] = mapped_column(String(16))  # ok | wrong | expired | reused | mismatch
    actor: Mapped[str] = mapped_column(String(128))

    __table_args__ = (Index("ix_unblock_attempt_serial_at", "device_serial", "at"),)


class RemoteKeyPin(Base):
    """The PIN of a remote (RSSP/HSM) key: an authorisation factor held by GovCA (argon2)."""

    __tablename__ = "remote_key_pin"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("key_device.id"), unique=True)
    pin_hash: Mapped[str] = mapped_column(String(256))
    set_at: Mapped[dt.datetime]
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
