"""One-time unblock authorisations: random, hashed at rest, single use, short-lived, bound to
one device's serial; failed presentations are rate-limited per device and raise an alert."""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.errors import CAError, Conflict, InvalidInput, PermissionDenied
from ca.store.database import Database
from ca.store.models_tokens import KeyDevice, UnblockAttempt, UnblockAuthorisation
from ca.tokens.registry import REMOTE_TYPES, get_device, transition

CODE_TTL = dt.timedelta(minutes=15)
MAX_TTL = dt.timedelta(hours=24)
FAILURE_WINDOW = dt.timedelta(minutes=15)
MAX_FAILURES = 5
# 30 symbols without look-alikes (no 0/O, 1/I/L, U); 20 symbols = 98 bits of entropy.
ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
CODE_SYMBOLS = 20
_FAILED = ("wrong", "expired", "reused", "mismatch")


class UnblockRefused(PermissionDenied):
    """An unblock code was refused; `code` says why (wrong, expired, used, other device...)."""
    code = "unblock_refused"


@dataclass(frozen=True)
class IssuedCode:
    code: str  # shown once to the holder/officer; only its hash is stored
    authorisation_id: int
    device_id: int
    device_serial: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class Redeemed:
    authorisation_id: int
    device_id: int
    request_ref: str | None


def normalise(code: str) -> str:
    text = "".join(ch for ch in str(code).upper() if ch not in "- \t\r\n")
    if len(text) != CODE_SYMBOLS or any(ch not in ALPHABET for ch in text):
        raise InvalidInput(f"an unblock code has {CODE_SYMBOLS} letters and digits "
                           "(XXXX-XXXX-XXXX-XXXX-XXXX)", field="code", code="unblock_code_format")
    return text


def code_hash(code: str) -> str:
    return hashlib.sha256(b"govca:unblock:v1:" + normalise(code).encode()).hexdigest()


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_SYMBOLS))
    return "-".join(raw[i:i + 4] for i in range(0, CODE_SYMBOLS, 4))


def issue_authorisation(session: Session, *, device_id: int, actor: str, at: dt.datetime,
                        request_ref: str | None = None, ttl: dt.timedelta = CODE_TTL,
                        details: dict | None = None) -> IssuedCode:
    """After an approved restore request: a fresh one-time code for this device (any earlier
    unused code is withdrawn). The device moves to `locked` if it was in service. Runs in the
    caller's transaction (the approval's)."""
    if not dt.timedelta(minutes=1) <= ttl <= MAX_TTL:
        raise InvalidInput("an unblock code lives between 1 minute and 24 hours", field="ttl")
    device = get_device(session, device_id, for_update=True)
    if not device.serial:
        raise Conflict(f"device {device.id} has no recorded serial; it was never initialised",
                       field="device", code="device_not_initialised")
    if device.state in ("issued", "restored"):
        transition(session, device, "locked", actor=actor, at=at, reason="restore approved")
    elif device.state != "locked":
        raise Conflict(f"device {device.id} is {device.state}; only a device in service can be "
                       "unblocked", field="device", code="device_not_in_service")
    purpose = "remote" if device.device_type in REMOTE_TYPES else "token"
    session.execute(update(UnblockAuthorisation).where(
        UnblockAuthorisation.device_id == device.id, UnblockAuthorisation.consumed_at.is_(None),
        UnblockAuthorisation.cancelled_at.is_(None)).values(cancelled_at=at))
    code = new_code()
    row = UnblockAuthorisation(device_id=device.id, device_serial=device.serial,
                               code_hash=code_hash(code), purpose=purpose,
                               request_ref=request_ref, created_by=actor, created_at=at,
                               expires_at=at + ttl)
    session.add(row)
    session.flush()
    audit.record(session, "device.unblock.authorise", actor=actor, at=at,
                 target=f"device:{device.id}", domain_id=device.domain_id,
                 details={"authorisation_id": row.id, "serial": device.serial,
                          "request_ref": request_ref, "expires_at": row.expires_at.isoformat(),
                          **(details or {})})
    return IssuedCode(code=code, authorisation_id=row.id, device_id=device.id,
                      device_serial=device.serial, expires_at=row.expires_at)


def failures_since(session: Session, device_serial: str, since: dt.datetime) -> int:
    return session.execute(select(func.count()).select_from(UnblockAttempt).where(
        UnblockAttempt.device_serial == device_serial, UnblockAttempt.at > since,
        UnblockAttempt.outcome.in_(_FAILED))).scalar_one()


def redeem(db: Database, clock: Clock, *, code: str, device_serial: str, actor: str,
           purpose: str = "token",
           verify: Callable[[Session, KeyDevice], None] | None = None,
           on_success: Callable[[Session, KeyDevice, Redeemed], object] | None = None):
    """Verify and consume a code presented for the device with `device_serial`. `verify` may
    check more (the token's certificates) before the code is consumed; `on_success` runs in
    the same transaction as the consumption (e.g. releasing the escrowed SO PIN) and its result
    is returned with the Redeemed record. Failures are recorded and audited, then raised."""
    device_serial = (device_serial or "").strip()
    if not device_serial:
        raise InvalidInput("the device serial is required", field="serial")
    hashed = code_hash(code)  # format errors are not attempts against a device
    now = clock.now()
    with db.transaction() as s:
        if failures_since(s, device_serial, now - FAILURE_WINDOW) >= MAX_FAILURES:
            audit.record(s, "device.unblock.limited", actor=actor, at=now,
                         target=f"serial:{device_serial}", details={"purpose": purpose})
            limited = True
        else:
            limited = False
    if limited:
        raise UnblockRefused(f"too many failed unblock attempts for device {device_serial}; "
                             f"wait {int(FAILURE_WINDOW.total_seconds() // 60)} minutes and ask "
                             "the RA office for a new code", field="code",
                             code="unblock_rate_limited")
    failure: tuple[str, CAError] | None = None
    try:
        with db.transaction() as s:
            row = s.execute(select(UnblockAuthorisation).where(
                UnblockAuthorisation.code_hash == hashed).with_for_update()).scalar_one_or_none()
            outcome, error = _judge(row, device_serial, purpose, now)
            if error is not None:
                failure = (outcome, error)
                raise error
            device = get_device(s, row.device_id, for_update=True)
            if verify is not None:
                try:
                    verify(s, device)
                except CAError as exc:
                    failure = ("mismatch", exc)
                    raise
            done = s.execute(update(UnblockAuthorisation).where(
                UnblockAuthorisation.id == row.id, UnblockAuthorisation.consumed_at.is_(None))
                .values(consumed_at=now, consumed_by=actor))
            if done.rowcount != 1:
                failure = ("reused", UnblockRefused("this unblock code has already been used",
                                                    field="code", code="unblock_code_used"))
                raise failure[1]
            s.add(UnblockAttempt(device_serial=device_serial, at=now, outcome="ok", actor=actor))
            redeemed = Redeemed(authorisation_id=row.id, device_id=device.id,
                                request_ref=row.request_ref)
            audit.record(s, "device.unblock.redeem", actor=actor, at=now,
                         target=f"device:{device.id}", domain_id=device.domain_id,
                         details={"authorisation_id": row.id, "serial": device_serial,
                                  "request_ref": row.request_ref})
            extra = on_success(s, device, redeemed) if on_success else None
            return redeemed, extra
    except CAError:
        if failure is not None:
            _record_failure(db, clock, device_serial, actor, failure[0], purpose)
        raise


def _judge(row: UnblockAuthorisation | None, serial: str, purpose: str,
           now: dt.datetime) -> tuple[str, CAError | None]:
    if row is None or row.purpose != purpose:
        return "wrong", UnblockRefused("this unblock code is not valid", field="code",
                                       code="unblock_code_wrong")
    if row.device_serial != serial:
        return "mismatch", UnblockRefused(
            "this unblock code was issued for another device; the token presented is not the "
            "one of the approved restore request", field="code", code="unblock_code_other_device")
    if row.consumed_at is not None:
        return "reused", UnblockRefused("this unblock code has already been used", field="code",
                                        code="unblock_code_used")
    if row.cancelled_at is not None:
        return "reused", UnblockRefused("this unblock code was withdrawn (a newer code was "
                                        "issued or too many attempts failed)", field="code",
                                        code="unblock_code_withdrawn")
    if row.expires_at <= now:
        return "expired", UnblockRefused(
            f"this unblock code expired at {row.expires_at:%Y-%m-%d %H:%M:%SZ}; ask the RA "
            "office for a new one", field="code", code="unblock_code_expired")
    return "ok", None


def _record_failure(db: Database, clock: Clock, serial: str, actor: str, outcome: str,
                    purpose: str) -> None:
    now = clock.now()
    with db.transaction() as s:
        s.add(UnblockAttempt(device_serial=serial, at=now, outcome=outcome, actor=actor))
        s.flush()
        audit.record(s, "device.unblock.failed", actor=actor, at=now, target=f"serial:{serial}",
                     details={"outcome": outcome, "purpose": purpose})
        count = failures_since(s, serial, now - FAILURE_WINDOW)
        if count == MAX_FAILURES:
            # The alert: too many failures; outstanding codes for this device are withdrawn.
            withdrawn = s.execute(update(UnblockAuthorisation).where(
                UnblockAuthorisation.device_serial == serial,
                UnblockAuthorisation.consumed_at.is_(None),
                UnblockAuthorisation.cancelled_at.is_(None)).values(cancelled_at=now)).rowcount
            audit.record(s, "device.unblock.alert", actor="system:unblock", at=now,
                         target=f"serial:{serial}",
                         details={"failures": count, "window_minutes":
                                  int(FAILURE_WINDOW.total_seconds() // 60),
                                  "codes_withdrawn": withdrawn, "last_actor": actor})
