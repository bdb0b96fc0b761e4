"""Revocation: one conditional UPDATE and one audit event per certificate, in one transaction
(revoke) or several in one (revoke_many)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import bindparam, delete, select, update

from ca import audit, serial as serials
from ca.clock import Clock, require_aware
from ca.errors import CAError, Conflict, InvalidInput, NotFound
from ca.store.database import Database, in_chunks
from ca.store.models import Certificate, CertificateAuthority, Subscriber
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


def _checked(serial: str, reason: str, invalidity_date: dt.datetime | None, now: dt.datetime
             ) -> tuple[str, str, dt.datetime | None]:
    """The request's own checks, before anything is read: (hex serial, reason, invalidity)."""
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
    if invalidity_date is not None and invalidity_date > now:
        raise InvalidInput("the invalidity date cannot be in the future", field="invalidity_date")
    return hexserial, reason, invalidity_date


def _never_released(hexserial: str, state: str) -> Conflict:
    return Conflict(f"serial {hexserial} was never released ({state}); there is nothing to "
                    f"revoke", field="serial")


def _already_revoked(hexserial: str, reason: str | None, at: dt.datetime) -> Conflict:
    return Conflict(f"certificate {hexserial} is already revoked ({reason}, "
                    f"{at:%Y-%m-%d %H:%M:%SZ})", field="serial", code="already_revoked")


def revoke(db: Database, clock: Clock, *, serial: str, reason: str, actor: str,
           ca: str | None = None, invalidity_date: dt.datetime | None = None,
           details: dict | None = None) -> Certificate:
    """Revoke an issued certificate. Revoking twice is a Conflict, never a second record."""
    now = clock.now().replace(microsecond=0)
    hexserial, reason, invalidity_date = _checked(serial, reason, invalidity_date, now)
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
            raise _never_released(hexserial, row.state)
        result = s.execute(
            update(Certificate).where(Certificate.id == row.id, Certificate.revoked_at.is_(None))
            .values(revoked_at=now, revocation_reason=reason, invalidity_date=invalidity_date))
        if result.rowcount != 1:
            s.refresh(row)
            raise _already_revoked(hexserial, row.revocation_reason, row.revoked_at)
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


def revoke_many(db: Database, clock: Clock, items: list[tuple[str, str, dict | None]], *,
                actor: str, ca: str) -> list[str | CAError]:
    """Several revocations by one CA in ONE transaction, each with revoke()'s checks and
    effects (its certificate marked revoked, its pre-signed answer deleted, its own cert.revoke
    event, its notice): `items` are (serial, reason, details). A refused item (unknown serial,
    never released, already revoked: revoke()'s errors) changes nothing and is returned as its
    error in its place; the others are revoked together and returned as their hex serials.
    Set-based: the certificates are read with one query per IN_CHUNK (locked, FOR UPDATE on
    PostgreSQL, so no other revocation slips in between the check and the write), revoked by
    one executemany UPDATE, their pre-signed answers deleted by one DELETE, the events written
    by one record_many. Used by the reorganisation worker for a batch of replaced
    certificates."""
    now = clock.now().replace(microsecond=0)
    out: list[str | CAError | None] = [None] * len(items)
    checked: dict[int, tuple[str, str]] = {}
    for i, (serial, reason, _details) in enumerate(items):
        try:
            hexserial, reason, _ = _checked(serial, reason, None, now)
            checked[i] = (hexserial, reason)
        except CAError as exc:
            out[i] = exc
    if not checked:
        return out  # type: ignore[return-value]
    ct, st = Certificate.__table__, Subscriber.__table__
    with db.transaction() as s:
        conn = s.connection()
        ca_id = conn.execute(select(CertificateAuthority.__table__.c.id).where(
            CertificateAuthority.__table__.c.name == ca)).scalar_one_or_none()
        if ca_id is None:
            raise NotFound(f"no CA named {ca!r}", field="ca")
        found = {}
        for chunk in in_chunks(sorted({h for h, _r in checked.values()})):
            found.update((row.serial, row) for row in conn.execute(
                select(ct.c.id, ct.c.serial, ct.c.state, ct.c.revoked_at,
                       ct.c.revocation_reason, st.c.domain_id)
                .select_from(ct.outerjoin(st, st.c.id == ct.c.subscriber_id))
                .where(ct.c.ca_id == ca_id, ct.c.serial.in_(chunk))
                .with_for_update(of=ct)))
        updates, events, serials_done = [], [], set()
        for i, (hexserial, reason) in checked.items():
            row = found.get(hexserial)
            if row is None:
                out[i] = NotFound(f"no certificate with serial {hexserial}", field="serial")
            elif row.state != "issued":
                out[i] = _never_released(hexserial, row.state)
            elif row.revoked_at is not None or hexserial in serials_done:
                out[i] = _already_revoked(hexserial, row.revocation_reason or reason,
                                          row.revoked_at or now)
            else:
                updates.append({"b_id": row.id, "b_reason": reason})
                events.append(audit.Entry("cert.revoke", actor, now, f"{ca}:{hexserial}",
                                          row.domain_id, {"reason": reason,
                                                          "invalidity_date": None,
                                                          **(items[i][2] or {})}))
                serials_done.add(hexserial)
                out[i] = hexserial
        if updates:
            conn.execute(update(ct).where(ct.c.id == bindparam("b_id"), ct.c.revoked_at.is_(None))
                         .values(revoked_at=now, revocation_reason=bindparam("b_reason"),
                                 invalidity_date=None), updates)
            ot = OcspResponse.__table__
            for chunk in in_chunks(sorted(serials_done)):
                conn.execute(delete(ot).where(ot.c.ca_id == ca_id, ot.c.serial.in_(chunk)))
            audit.record_many(s, events)
            from ca.ra import notify  # e-mail outbox, in this transaction (docs/notices.md)
            if notify.enabled():
                for row_id in (u["b_id"] for u in updates):
                    notify.certificate_revoked(s, clock, s.get(Certificate, row_id))
    return out  # type: ignore[return-value]


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
