"""PINs of remote (RSSP/HSM) keys: an authorisation factor GovCA holds as an argon2 hash."""
from __future__ import annotations

import datetime as dt

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from ca.store.database import Database
from ca.store.models_tokens import KeyDevice, RemoteKeyPin
from ca.tokens import unblock
from ca.tokens.pin_policy import check_pin
from ca.tokens.registry import REMOTE_TYPES, get_device, transition

MAX_FAILURES = 5
_hasher = PasswordHasher()  # argon2id with the library's current defaults


class RemotePinRefused(PermissionDenied):
    code = "remote_pin_refused"


def _remote_device(session: Session, device_id: int) -> KeyDevice:
    device = get_device(session, device_id, for_update=True)
    if device.device_type not in REMOTE_TYPES:
        raise InvalidInput(f"device {device.id} is a {device.device_type}; only RSSP/HSM keys "
                           "have a PIN held by GovCA", field="device")
    return device


def _row(session: Session, device: KeyDevice) -> RemoteKeyPin | None:
    return session.execute(select(RemoteKeyPin).where(
        RemoteKeyPin.device_id == device.id)).scalar_one_or_none()


def set_initial_pin(session: Session, device_id: int, pin: str, *, actor: str,
                    at: dt.datetime) -> None:
    """At enrolment of a remote key: the holder's first PIN (policy-checked, argon2-hashed)."""
    check_pin(pin)
    device = _remote_device(session, device_id)
    if _row(session, device) is not None:
        raise Conflict(f"device {device.id} already has a PIN; use the reset path",
                       field="device", code="pin_exists")
    session.add(RemoteKeyPin(device_id=device.id, pin_hash=_hasher.hash(pin), set_at=at,
                             failures=0, locked=False))
    session.flush()
    audit.record(session, "device.remote_pin.set", actor=actor, at=at,
                 target=f"device:{device.id}", domain_id=device.domain_id, details={})


def verify_pin(db: Database, clock: Clock, device_id: int, pin: str, *, actor: str) -> None:
    """Authorise one use of the remote key; after MAX_FAILURES wrong PINs the key locks (the
    device becomes `locked`) until a reset with an approved one-time code."""
    now = clock.now()
    with db.transaction() as s:
        device = _remote_device(s, device_id)
        row = _row(s, device)
        if row is None:
            raise NotFound(f"device {device.id} has no PIN yet", field="device")
        if row.locked:
            raise RemotePinRefused("the PIN of this remote key is locked; ask for a restore",
                                   field="pin", code="remote_pin_locked")
        try:
            _hasher.verify(row.pin_hash, pin)
            ok = True
        except (VerificationError, InvalidHashError):
            ok = False
        if ok:
            row.failures = 0
            return
        row.failures += 1
        locked = row.failures >= MAX_FAILURES
        row.locked = locked
        audit.record(s, "device.remote_pin.failed", actor=actor, at=now,
                     target=f"device:{device.id}", domain_id=device.domain_id,
                     details={"failures": row.failures, "locked": locked})
        if locked and device.state in ("issued", "restored"):
            transition(s, device, "locked", actor="system:remote-pin", at=now,
                       reason="too many wrong PINs")
    raise RemotePinRefused("wrong PIN" + (" (the key is now locked)" if locked else ""),
                           field="pin", code="remote_pin_locked" if locked else "remote_pin_wrong")


def reset_pin(db: Database, clock: Clock, *, device_id: int, code: str, new_pin: str,
              actor: str) -> None:
    """Reset through the same approved one-time code path as token unblocking. The PIN policy
    is checked before the code is consumed, so a refused PIN does not waste the code."""
    check_pin(new_pin, field="new_pin")
    with db.transaction() as s:
        device = _remote_device(s, device_id)
        serial = device.serial

    def apply(sess: Session, dev: KeyDevice, redeemed: unblock.Redeemed) -> None:
        if dev.id != device_id:  # pragma: no cover - the code is bound to the serial
            raise Conflict("the code belongs to another device", field="code")
        now = clock.now()
        row = _row(sess, dev)
        if row is None:
            row = RemoteKeyPin(device_id=dev.id, failures=0, locked=False)
            sess.add(row)
        row.pin_hash, row.set_at, row.failures, row.locked = _hasher.hash(new_pin), now, 0, False
        sess.flush()
        if dev.state == "locked":
            transition(sess, dev, "restored", actor=actor, at=now, reason="PIN reset",
                       details={"authorisation_id": redeemed.authorisation_id})
        audit.record(sess, "device.remote_pin.reset", actor=actor, at=now,
                     target=f"device:{dev.id}", domain_id=dev.domain_id,
                     details={"authorisation_id": redeemed.authorisation_id})

    unblock.redeem(db, clock, code=code, device_serial=serial, actor=actor, purpose="remote",
                   on_success=apply)
