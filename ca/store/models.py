"""The tables of GovCA (SQLAlchemy 2.0 typed models)."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Date, ForeignKey, Index, Integer,
                        LargeBinary, String, Text, UniqueConstraint, text)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ca.store.base import Base

# --- Organisations ---------------------------------------------------------------------------


class RaDomain(Base):
    """A delegated registration domain: a province (2025 map) or a ministry."""

    __tablename__ = "ra_domain"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # province | ministry | central
    locality: Mapped[str] = mapped_column(String(128))  # L= in certificates
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | suspended | merged
    merged_into_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ra_domain.id"))
    created_at: Mapped[dt.datetime]

    __table_args__ = (CheckConstraint("kind IN ('province','ministry','central')", name="kind"),)


class Organization(Base):
    """A node of the organisation tree: an agency (levels 1-4) or a unit inside one."""

    __tablename__ = "organization"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("ra_domain.id"), index=True)
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("organization.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # agency | unit
    level: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime]

    domain: Mapped[RaDomain] = relationship()
    parent: Mapped[Optional["Organization"]] = relationship(remote_side="Organization.id")

    __table_args__ = (CheckConstraint("kind IN ('agency','unit')", name="kind"),)


# --- Subscribers -----------------------------------------------------------------------------


class Subscriber(Base):
    """A certificate holder: a person, an organisation (seal) or a device/service (Form 01-03)."""

    __tablename__ = "subscriber"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="person")
    domain_id: Mapped[int] = mapped_column(ForeignKey("ra_domain.id"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organization.id"), index=True)
    full_name: Mapped[str] = mapped_column(String(200))
    search_name: Mapped[str] = mapped_column(String(200), index=True)  # folded, no diacritics
    id_type: Mapped[str] = mapped_column(String(16), default="CCCD")  # CCCD | CMND | PASSPORT
    id_number: Mapped[str] = mapped_column(String(32))
    date_of_birth: Mapped[Optional[dt.date]] = mapped_column(Date)
    email: Mapped[Optional[str]] = mapped_column(String(254))
    mobile: Mapped[Optional[str]] = mapped_column(String(32))
    position: Mapped[Optional[str]] = mapped_column(String(200))
    device_type: Mapped[str] = mapped_column(String(16), default="TOKEN")
    username: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]

    organization: Mapped[Organization] = relationship()
    domain: Mapped[RaDomain] = relationship()

    __table_args__ = (
        UniqueConstraint("id_type", "id_number"),
        CheckConstraint("kind IN ('person','organization','device')", name="kind"),
        # Reports grouped by domain / agency / device type: index-only scans (issue 8).
        Index("ix_subscriber_domain_cover", "domain_id", "id", "kind", "organization_id",
              "device_type"),
        Index("ix_subscriber_report", "id", "domain_id", "organization_id", "device_type",
              "kind"),
        CheckConstraint("device_type IN ('TOKEN','SIM','SOFT','RSSP','HSM')", name="device_type"),
    )


# --- CAs and certificates --------------------------------------------------------------------


class CertificateAuthority(Base):
    """A CA of the hierarchy; its private key lives in the HSM, referenced by CKA_ID and label."""

    __tablename__ = "certificate_authority"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # short name used in URLs
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("certificate_authority.id"))
    subject: Mapped[str] = mapped_column(Text)
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    serial: Mapped[str] = mapped_column(String(40))
    key_label: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(64))  # CKA_ID, hex
    key_type: Mapped[str] = mapped_column(String(16))  # rsa | ec
    key_spec: Mapped[str] = mapped_column(String(16))  # 2048 | 3072 | 4096 | secp256r1 | secp384r1
    signature_scheme: Mapped[str] = mapped_column(String(16), default="pkcs1v15")  # pkcs1v15 | pss | ecdsa
    hash_algorithm: Mapped[str] = mapped_column(String(16), default="sha256")
    spki_sha256: Mapped[str] = mapped_column(String(64), index=True)
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | retired
    crl_interval_seconds: Mapped[int] = mapped_column(Integer, default=86400)
    crl_validity_seconds: Mapped[int] = mapped_column(Integer, default=7 * 86400)
    created_at: Mapped[dt.datetime]

    parent: Mapped[Optional["CertificateAuthority"]] = relationship(remote_side="CertificateAuthority.id")


class Certificate(Base):
    """Every serial ever reserved by a CA. A row exists before its certificate is signed
    ('reserved'); it becomes 'issued' with the DER, or 'failed'/'abandoned' (never released)."""

    __tablename__ = "certificate"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authority.id"))
    serial: Mapped[str] = mapped_column(String(40))  # lowercase hex, no separators
    state: Mapped[str] = mapped_column(String(16))  # reserved | issued | failed | abandoned
    subscriber_id: Mapped[Optional[int]] = mapped_column(ForeignKey("subscriber.id"), index=True)
    profile: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(Text)
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    spki_sha256: Mapped[str] = mapped_column(String(64), index=True)
    tbs_sha256: Mapped[str] = mapped_column(String(64))
    der: Mapped[Optional[bytes]] = mapped_column(LargeBinary)
    fingerprint_sha256: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    failure_reason: Mapped[Optional[str]] = mapped_column(Text)
    reserved_at: Mapped[dt.datetime]
    issued_at: Mapped[Optional[dt.datetime]]
    revoked_at: Mapped[Optional[dt.datetime]]
    revocation_reason: Mapped[Optional[str]] = mapped_column(String(32))
    invalidity_date: Mapped[Optional[dt.datetime]]
    organization_version_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("organization_version.id"))  # the organisation at issuance (models_org)

    ca: Mapped[CertificateAuthority] = relationship()
    subscriber: Mapped[Optional[Subscriber]] = relationship()

    __table_args__ = (
        UniqueConstraint("ca_id", "serial"),
        CheckConstraint("state IN ('reserved','issued','failed','abandoned')", name="state"),
        Index("ix_certificate_ca_state_reserved", "ca_id", "state", "reserved_at"),
        # CRL generation (full and delta): an index-only scan of the revoked certificates of
        # one CA; partial, so it holds only revoked rows (5 % of 1M = 50k) (issue 8).
        Index("ix_certificate_crl", "ca_id", "revoked_at", "state", "serial", "revocation_reason",
              "invalidity_date", postgresql_where=text("revoked_at IS NOT NULL"),
              sqlite_where=text("revoked_at IS NOT NULL")),
        # Reports (ca/reports.py) on 1M certificates, index-only scans (issue 8): issuance per
        # month, and status/coverage per holder.
        Index("ix_certificate_issued_at", "issued_at", "state", "subscriber_id"),
        Index("ix_certificate_holder_status", "subscriber_id", "state", "revoked_at",
              "not_before", "not_after"),
    )


# --- Audit -----------------------------------------------------------------------------------


class AuditEvent(Base):
    """One append-only, hash-chained audit event."""

    __tablename__ = "audit_event"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[dt.datetime]
    action: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    target: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    domain_id: Mapped[Optional[int]] = mapped_column(Integer, index=True)
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """A single row holding the chain head; updating it serialises appends."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
