"""The key-device registry: devices, holders, certificates on a device, audited transitions."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.errors import Conflict, InvalidInput, NotFound
from ca.names import clean_text
from ca.store.database import Database
from ca.store.models import Certificate, Subscriber
from ca.store.models_tokens import KeyDevice, KeyDeviceCertificate
from ca.tokens.states import COMPROMISED, check_transition

DEVICE_TYPES = ("TOKEN", "SIM", "SOFT", "RSSP", "HSM")
REMOTE_TYPES = ("RSSP", "HSM")
# The RFC 5280 reason a device's end of life implies for the certificates whose key it holds.
END_REASONS = {"lost": "keyCompromise", "destroyed": "keyCompromise",
               "retired": "cessationOfOperation"}


@dataclass(frozen=True)
class PendingRevocation:
    """A certificate that must be revoked because its device ended: what the workflow turns
    into a revoke request (or `revoke_device_certificates` revokes directly)."""

    serial: str
    ca: str
    reason: str
    certificate_id: int


def _target(device: KeyDevice) -> str:
    return f"device:{device.id}"


def _clean_serial(serial: str | None) -> str | None:
    if serial is None:
        return None
    s = serial.strip()
    if not s or len(s) > 64 or not s.isprintable():
        raise InvalidInput("a device serial is 1 to 64 printable characters", field="serial")
    return s


def register_device(session: Session, *, holder_id: int, device_type: str, label: str,
                    actor: str, at: dt.datetime, serial: str | None = None,
                    manufacturer: str = "", model: str = "") -> KeyDevice:
    """Record a new device (state `new`) for a subscriber."""
    if device_type not in DEVICE_TYPES:
        raise InvalidInput(f"device type must be one of {', '.join(DEVICE_TYPES)}",
                           field="device_type")
    holder = session.get(Subscriber, holder_id)
    if holder is None:
        raise NotFound(f"no subscriber with id {holder_id}", field="subscriber")
    label = clean_text(label, field_name="label", max_chars=32)
    serial = _clean_serial(serial)
    if serial is not None:
        _check_serial_free(session, serial, manufacturer.strip(), model.strip(), None)
    dev = KeyDevice(device_type=device_type, serial=serial, label=label,
                    manufacturer=manufacturer.strip()[:64], model=model.strip()[:64],
                    holder_id=holder.id, domain_id=holder.domain_id, state="new",
                    state_changed_at=at, created_at=at)
    session.add(dev)
    session.flush()
    audit.record(session, "device.register", actor=actor, at=at, target=_target(dev),
                 domain_id=dev.domain_id,
                 details={"holder_id": holder.id, "device_type": device_type, "label": label,
                          "serial": serial, "model": dev.model})
    return dev


def _check_serial_free(session: Session, serial: str, manufacturer: str, model: str,
                       device_id: int | None) -> None:
    other = session.execute(select(KeyDevice).where(
        KeyDevice.serial == serial, KeyDevice.manufacturer == manufacturer,
        KeyDevice.model == model)).scalars().first()
    if other is not None and other.id != device_id:
        raise Conflict(f"a device with serial {serial} is already registered "
                       f"(device {other.id}, {other.state})", field="serial",
                       code="duplicate_device")


def get_device(session: Session, device_id: int, *, for_update: bool = False) -> KeyDevice:
    q = select(KeyDevice).where(KeyDevice.id == device_id)
    if for_update:
        q = q.with_for_update()
    dev = session.execute(q).scalar_one_or_none()
    if dev is None:
        raise NotFound(f"no key device with id {device_id}", field="device")
    return dev


def find_device(session: Session, ref: str | int) -> KeyDevice:
    """A device by numeric id or by serial (`govca token show`)."""
    text = str(ref).strip()
    if text.isdigit():
        dev = session.get(KeyDevice, int(text))
        if dev is not None:
            return dev
    devs = session.execute(select(KeyDevice).where(KeyDevice.serial == text)).scalars().all()
    if len(devs) == 1:
        return devs[0]
    if len(devs) > 1:
        raise InvalidInput(f"several devices have serial {text}; use the device id",
                           field="device")
    raise NotFound(f"no key device with id or serial {text!r}", field="device")


def devices_of(session: Session, holder_id: int | None = None) -> list[KeyDevice]:
    q = select(KeyDevice).order_by(KeyDevice.id)
    if holder_id is not None:
        q = q.where(KeyDevice.holder_id == holder_id)
    return list(session.execute(q).scalars())


def transition(session: Session, device: KeyDevice, target: str, *, actor: str,
               at: dt.datetime, reason: str | None = None,
               details: dict | None = None) -> KeyDevice:
    """Move a device to `target` if the lifecycle allows it; audited in the caller's
    transaction. Lost/destroyed/retired go through `end_device`, which says what to revoke."""
    previous = device.state
    check_transition(previous, target)
    device.state = target
    device.state_reason = reason
    device.state_changed_at = at
    session.flush()
    audit.record(session, "device.state", actor=actor, at=at, target=_target(device),
                 domain_id=device.domain_id,
                 details={"from": previous, "to": target, "reason": reason, **(details or {})})
    return device


def bind_serial(session: Session, device: KeyDevice, serial: str, *, actor: str,
                at: dt.datetime) -> KeyDevice:
    """Record the serial a token reported after initialisation (it must not change later)."""
    serial = _clean_serial(serial)
    if device.serial is not None and device.serial != serial:
        raise Conflict(f"device {device.id} is registered with serial {device.serial}, not "
                       f"{serial}", field="serial", code="device_mismatch")
    _check_serial_free(session, serial, device.manufacturer, device.model, device.id)
    if device.serial is None:
        device.serial = serial
        session.flush()
        audit.record(session, "device.serial", actor=actor, at=at, target=_target(device),
                     domain_id=device.domain_id, details={"serial": serial})
    return device


def attach_certificate(session: Session, device: KeyDevice, certificate_id: int, *, actor: str,
                       at: dt.datetime, key_ref: str | None = None) -> KeyDeviceCertificate:
    cert = session.get(Certificate, certificate_id)
    if cert is None or cert.state != "issued":
        raise NotFound(f"no issued certificate with id {certificate_id}", field="certificate")
    if cert.subscriber_id != device.holder_id:
        raise Conflict("the certificate belongs to another subscriber than the device holder",
                       field="certificate", code="holder_mismatch")
    link = KeyDeviceCertificate(device_id=device.id, certificate_id=cert.id, key_ref=key_ref,
                                attached_at=at)
    session.add(link)
    session.flush()
    audit.record(session, "device.certificate", actor=actor, at=at, target=_target(device),
                 domain_id=device.domain_id, details={"serial": cert.serial, "key_ref": key_ref})
    return link


def device_certificates(session: Session, device_id: int) -> list[Certificate]:
    return list(session.execute(
        select(Certificate).join(KeyDeviceCertificate,
                                 KeyDeviceCertificate.certificate_id == Certificate.id)
        .where(KeyDeviceCertificate.device_id == device_id).order_by(Certificate.id)).scalars())


def certificates_to_revoke(session: Session, device: KeyDevice, now: dt.datetime,
                           reason: str = "keyCompromise") -> list[PendingRevocation]:
    """Issued, unrevoked, unexpired certificates whose key is on the device."""
    return [PendingRevocation(serial=c.serial, ca=c.ca.name, reason=reason, certificate_id=c.id)
            for c in device_certificates(session, device.id)
            if c.state == "issued" and c.revoked_at is None and c.not_after > now]


def end_device(session: Session, device_id: int, state: str, *, actor: str, at: dt.datetime,
               reason: str | None = None) -> list[PendingRevocation]:
    """Mark a device lost, destroyed or retired (audited) and return the certificates that
    must now be revoked: keyCompromise for lost/destroyed, cessationOfOperation for retired.
    The caller (RA workflow) raises revoke requests for them in the normal path."""
    if state not in END_REASONS:
        raise InvalidInput("a device ends as lost, destroyed or retired", field="state")
    device = get_device(session, device_id, for_update=True)
    transition(session, device, state, actor=actor, at=at, reason=reason)
    pending = certificates_to_revoke(session, device, at, END_REASONS[state])
    if pending:
        audit.record(session, "device.revocations_due", actor=actor, at=at,
                     target=_target(device), domain_id=device.domain_id,
                     details={"serials": [p.serial for p in pending],
                              "reason": END_REASONS[state],
                              "compromised": state in COMPROMISED})
    return pending


def revoke_device_certificates(db: Database, clock: Clock, device_id: int, *, actor: str,
                               reason: str | None = None) -> list[str]:
    """Revoke directly (operators, CLI) every certificate still due on an ended device; each
    through ca.revocation.revoke (one transaction and one audit event per certificate).
    Returns the serials revoked now; certificates already revoked are skipped."""
    from ca.revocation import revoke
    with db.transaction() as s:
        device = get_device(s, device_id)
        if device.state not in END_REASONS:
            raise Conflict(f"device {device_id} is {device.state}; mark it lost, destroyed or "
                           f"retired first", field="state", code="device_in_service")
        why = reason or END_REASONS[device.state]
        pending = certificates_to_revoke(s, device, clock.now(), why)
    done = []
    for p in pending:
        try:
            revoke(db, clock, serial=p.serial, ca=p.ca, reason=p.reason, actor=actor,
                   details={"device_id": device_id})
        except Conflict as exc:
            if exc.code != "already_revoked":
                raise
            continue
        done.append(p.serial)
    return done
