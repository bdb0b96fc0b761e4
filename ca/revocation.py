"""Revocation: one conditional UPDATE and one audit event in one transaction."""
from __future__ import annotations

import datetime as dt

from cryptography import x509
from sqlalchemy import select, update

from ca import audit, serial as serials
from ca.clock import Clock, require_aware
from ca.errors import Conflict, InvalidInput, NotFound
from ca.store.database import Database
from ca.store.models import Certificate, CertificateAuthority

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
        audit.record(s, "cert.revoke", actor=actor, at=now, target=f"{row.ca.name}:{hexserial}",
                     domain_id=row.subscriber.domain_id if row.subscriber else None,
                     details={"reason": reason, "invalidity_date":
                              invalidity_date.isoformat() if invalidity_date else None,
                              **(details or {})})
        s.refresh(row)
        return row
