"""Tables of the relying-party side: published CRLs, OCSP responders and pre-signed responses,
and the scheduler's leader lease."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import (BigInteger, CheckConstraint, ForeignKey, Index, Integer, LargeBinary,
                        String, UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column

from ca.store.base import Base


class PublishedCRL(Base):
    """Every CRL ever published (history, never deleted). RFC 5280 5.2.3: full and delta CRLs of
    a CA share one increasing CRL number sequence; the unique constraints make a repeat fail.
    A row is written with `der` NULL when its number is taken (same transaction), then filled
    once the HSM has signed; a crash in between leaves a gap, never a repeat."""

    __tablename__ = "published_crl"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authority.id"))
    kind: Mapped[str] = mapped_column(String(8))  # full | delta
    crl_number: Mapped[int] = mapped_column(BigInteger)
    base_crl_number: Mapped[Optional[int]] = mapped_column(BigInteger)  # delta only
    this_update: Mapped[dt.datetime]
    next_update: Mapped[dt.datetime]
    entries: Mapped[int] = mapped_column(Integer, default=0)
    der: Mapped[Optional[bytes]] = mapped_column(LargeBinary)
    sha256: Mapped[Optional[str]] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    published_at: Mapped[Optional[dt.datetime]]

    __table_args__ = (
        UniqueConstraint("ca_id", "crl_number", "kind"),
        UniqueConstraint("ca_id", "crl_number", name="uq_published_crl_ca_number"),
        CheckConstraint("kind IN ('full','delta')", name="kind"),
        Index("ix_published_crl_ca_kind_number", "ca_id", "kind", "crl_number"),
    )


class OcspResponder(Base):
    """A delegated OCSP responder of a CA (RFC 6960 4.2.2.2): a certificate with
    id-kp-OCSPSigning issued by that CA, its key in the HSM."""

    __tablename__ = "ocsp_responder"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authority.id"), index=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificate.id"))
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(64))  # CKA_ID, hex
    key_label: Mapped[str] = mapped_column(String(128))
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime]


class OcspResponse(Base):
    """A pre-signed response without nonce for one serial (RFC 5019 2.1.1: SHA-1 CertID), so
    that a read needs no HSM. Replaced when it nears nextUpdate, deleted when the serial is
    revoked (the next read or the revocation itself signs the new status)."""

    __tablename__ = "ocsp_response"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authority.id"))
    serial: Mapped[str] = mapped_column(String(40))
    responder_id: Mapped[int] = mapped_column(ForeignKey("ocsp_responder.id"))
    status: Mapped[str] = mapped_column(String(8))  # good | revoked | unknown
    der: Mapped[bytes] = mapped_column(LargeBinary)
    this_update: Mapped[dt.datetime]
    next_update: Mapped[dt.datetime] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("ca_id", "serial"),)


class SchedulerLease(Base):
    """The leader lease: one row per job group; a holder renews it before it expires."""

    __tablename__ = "scheduler_lease"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime]
    acquired_at: Mapped[dt.datetime]
