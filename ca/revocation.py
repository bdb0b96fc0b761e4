"""Revocation: one conditional UPDATE and one audit event in one transaction."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import delete, select, update

from ca import audit, serial as serials
from ca.clock import Clock, require_aware
from ca.errors import Conflict, InvalidInput, NotFound
from ca.store.database import Database
from ca.store.models import Certificate, CertificateAuthority
from ca.store.models_crl import OcspResponse, PublishedCRL

# RFC 5280 5.3.1 reason codes GovCA accepts. Decree 68 has no suspension (certificateHold) and
# no un-revoke (removeFromCRL); `unspecified` is never written (the entry omits the reason).
REASONS: dict[str, x509.ReasonFlags] = {
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
}


def parse_reason(text: str | None) -> str:
    if not text:
        raise InvalidInput("a revocation reason is required: " + ", ".join(REASONS),
                           field="reason")
    for name in REASONS:
        if name.lower() == text.strip().lower():
            return name
    raise InvalidInput(f"unknown revocation reason {text!r}; use one of: " + ", ".join(REASONS),
                       field="reason")


def revoke(db: Database, clock: Clock, *, serial: str, reason: str, actor: str,
           ca: str | None = None, invalidity_date: dt.datetime | None = None,
           details: dict | None = None) -> Certificate:
    """Revoke an issued certificate. Revoking twice is a Conflict, never a second record."""
    reason = parse_reason(reason)
    try:
        hexserial = serials.to_hex(serials.parse(serial))
    except ValueError as exc:
        raise InvalidInput(str(exc), field="serial") from None
    if invalidity_date is not None:
        if reason != "keyCompromise":
            raise InvalidInput("an invalidity date is only recorded for keyCompromise",
                               field="invalidity_date")
        invalidity_date = require_aware(invalidity_date, "invalidity date").replace(microsecond=0)
    now = clock.now().replace(microsecond=0)
    if invalidity_date is not None and invalidity_date > now:
        raise InvalidInput("the invalidity date cannot be in the future", field="invalidity_date")
    with db.transaction() as s:
        q = select(Certificate).join(CertificateAuthority).where(Certificate.serial == hexserial)
        if ca:
            q = q.where(CertificateAuthority.name == ca)
        rows = s.execute(q).scalars().all()
        if not rows:
            raise NotFound(f"no certificate with serial {hexserial}", field="serial")
        if len(rows) > 1:
            raise InvalidInput("several CAs have issued this serial; name the CA", field="ca")
        row = rows[0]
        if row.state != "issued":
            raise Conflict(f"serial {hexserial} was never released ({row.state}); there is "
                           f"nothing to revoke", field="serial")
        result = s.execute(
            update(Certificate).where(Certificate.id == row.id, Certificate.revoked_at.is_(None))
            .values(revoked_at=now, revocation_reason=reason, invalidity_date=invalidity_date))
        if result.rowcount != 1:
            s.refresh(row)
            raise Conflict(f"certificate {hexserial} is already revoked "
                           f"({row.revocation_reason}, {row.revoked_at:%Y-%m-%d %H:%M:%SZ})",
                           field="serial", code="already_revoked")
        # The pre-signed OCSP answer ("good") is void from now on: delete it in the same
        # transaction, so no worker can read it from the database after the commit.
        s.execute(delete(OcspResponse).where(OcspResponse.ca_id == row.ca_id,
                                             OcspResponse.serial == hexserial))
        audit.record(s, "cert.revoke", actor=actor, at=now, target=f"{row.ca.name}:{hexserial}",
                     domain_id=row.subscriber.domain_id if row.subscriber else None,
                     details={"reason": reason, "invalidity_date":
                              invalidity_date.isoformat() if invalidity_date else None,
                              **(details or {})})
        s.refresh(row)
        _ = row.ca.name  # loaded now: callers read row.ca after the session has closed
        from ca.ra import notify  # e-mail outbox, in this transaction (docs/notices.md)
        notify.certificate_revoked(s, clock, row)
        return row


@dataclass(frozen=True)
class StatusAt:
    """The status of a serial at a past or present time, with the CRL that was current then."""

    ca: str
    serial: str
    at: dt.datetime
    status: str  # good | revoked | expired | not_yet_valid | unknown
    revoked_at: dt.datetime | None = None
    reason: str | None = None
    invalidity_date: dt.datetime | None = None
    crl_number: int | None = None  # the full CRL current at `at` (history)
    crl_this_update: dt.datetime | None = None


def status_at(db: Database, *, ca: str, serial: str, at: dt.datetime) -> StatusAt:
    """Answer "what was the status of serial S of CA at time T" from the kept history: revocation
    rows are never deleted (Decree 68: no un-revoke) and every published CRL is kept."""
    at = require_aware(at, "time")
    try:
        hexserial = serials.to_hex(serials.parse(serial))
    except ValueError as exc:
        raise InvalidInput(str(exc), field="serial") from None
    with db.transaction() as s:
        ca_row = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == ca)).scalar_one_or_none()
        if ca_row is None:
            raise NotFound(f"no CA named {ca!r}", field="ca")
        crl = s.execute(select(PublishedCRL).where(
            PublishedCRL.ca_id == ca_row.id, PublishedCRL.kind == "full",
            PublishedCRL.der.is_not(None), PublishedCRL.this_update <= at)
            .order_by(PublishedCRL.crl_number.desc()).limit(1)).scalar_one_or_none()
        crl_info = {"crl_number": crl.crl_number if crl else None,
                    "crl_this_update": crl.this_update if crl else None}
        row = s.execute(select(Certificate).where(Certificate.ca_id == ca_row.id,
                                                  Certificate.serial == hexserial)
                        ).scalar_one_or_none()
        base = {"ca": ca, "serial": hexserial, "at": at, **crl_info}
        if row is None or row.state != "issued" or (row.issued_at and row.issued_at > at):
            return StatusAt(status="unknown", **base)
        if row.revoked_at is not None and row.revoked_at <= at:
            return StatusAt(status="revoked", revoked_at=row.revoked_at,
                            reason=row.revocation_reason, invalidity_date=row.invalidity_date,
                            **base)
        if at < row.not_before:
            return StatusAt(status="not_yet_valid", **base)
        if at > row.not_after:
            return StatusAt(status="expired", **base)
        return StatusAt(status="good", **base)
