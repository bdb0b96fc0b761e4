"""Tables of the audit trail's signing side: the audit key and the signed checkpoints."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from ca.store.base import Base


class AuditKey(Base):
    """An audit signing key: private key in the HSM (CKA_ID + label), certificate issued by a CA
    through the issuance cycle. One is active; older ones stay to verify old checkpoints."""

    __tablename__ = "audit_key"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | retired
    key_label: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(64))  # CKA_ID, hex
    key_type: Mapped[str] = mapped_column(String(16))  # rsa | ec
    key_spec: Mapped[str] = mapped_column(String(16))
    ca_name: Mapped[str] = mapped_column(String(64))
    serial: Mapped[str] = mapped_column(String(40))
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    not_after: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime]

    __table_args__ = (CheckConstraint("status IN ('active','retired')", name="status"),)


class AuditCheckpoint(Base):
    """The chain head (seq, hash, event count) at a time, signed in the HSM by an audit key.
    Checkpoints form their own chain: `prev` is the SHA-256 of the previous one's payload."""

    __tablename__ = "audit_checkpoint"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, unique=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    event_count: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[dt.datetime]
    prev: Mapped[str] = mapped_column(String(64))
    key_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    algorithm: Mapped[str] = mapped_column(String(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
