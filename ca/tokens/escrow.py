"""SO-PIN escrow records: only ciphertext from the CA HSM's wrapping key; every release audited;
the SO PIN is rotated (staged, then committed) after each use."""
from __future__ import annotations

import datetime as dt
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca import audit
from ca.errors import Conflict, NotFound
from ca.store.models_tokens import KeyDevice, SoPinEscrow


class Sealer(Protocol):
    """Authenticated encryption with a key that never leaves the CA's HSM (hsm.escrow)."""

    key_label: str

    def seal(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Return (nonce, ciphertext-with-tag)."""

    def unseal(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes: ...


def _aad(device: KeyDevice) -> bytes:
    # Binds the ciphertext to its device row: a ciphertext copied onto another row will not open.
    return f"govca:so-pin:v1:device:{device.id}".encode()


def _row(session: Session, device: KeyDevice) -> SoPinEscrow | None:
    return session.execute(select(SoPinEscrow).where(
        SoPinEscrow.device_id == device.id)).scalar_one_or_none()


def store_so_pin(session: Session, device: KeyDevice, so_pin: str, sealer: Sealer, *,
                 actor: str, at: dt.datetime) -> SoPinEscrow:
    """Encrypt the SO PIN inside the HSM and keep only the ciphertext (replacing any older)."""
    nonce, ciphertext = sealer.seal(so_pin.encode("utf-8"), _aad(device))
    row = _row(session, device)
    replaced = row is not None
    if row is None:
        row = SoPinEscrow(device_id=device.id, released_count=0)
        session.add(row)
    row.key_label, row.nonce, row.ciphertext, row.created_at = (sealer.key_label, nonce,
                                                                ciphertext, at)
    row.pending_nonce = row.pending_ciphertext = row.pending_at = None
    session.flush()
    audit.record(session, "device.escrow.store", actor=actor, at=at,
                 target=f"device:{device.id}", domain_id=device.domain_id,
                 details={"wrapping_key": sealer.key_label, "replaced": replaced})
    return row


def has_escrow(session: Session, device_id: int) -> bool:
    return session.execute(select(SoPinEscrow.id).where(
        SoPinEscrow.device_id == device_id)).first() is not None


def release_so_pin(session: Session, device: KeyDevice, sealer: Sealer, *, actor: str,
                   at: dt.datetime, purpose: str, request_ref: str | None = None,
                   with_pending: bool = False):
    """Decrypt the escrowed SO PIN in the HSM for one authorised use; the release (never the
    PIN) is audited in the caller's transaction. With `with_pending`, returns (current,
    staged-or-None): a rotation whose confirmation was lost leaves the token on either."""
    row = _row(session, device)
    if row is None:
        raise NotFound(f"no SO PIN is escrowed for device {device.id}", field="device",
                       code="no_escrow")
    pin = sealer.unseal(row.nonce, row.ciphertext, _aad(device)).decode("utf-8")
    pending = None
    if with_pending and row.pending_ciphertext is not None:
        pending = sealer.unseal(row.pending_nonce, row.pending_ciphertext,
                                _aad(device)).decode("utf-8")
    row.released_count = (row.released_count or 0) + 1
    audit.record(session, "device.escrow.release", actor=actor, at=at,
                 target=f"device:{device.id}", domain_id=device.domain_id,
                 details={"purpose": purpose, "request_ref": request_ref,
                          "wrapping_key": row.key_label, "release_no": row.released_count,
                          "with_pending": pending is not None})
    return (pin, pending) if with_pending else pin


def stage_so_pin(session: Session, device: KeyDevice, new_so_pin: str, sealer: Sealer, *,
                 actor: str, at: dt.datetime) -> None:
    """Escrow the replacement SO PIN BEFORE the token's SO PIN is changed to it."""
    row = _row(session, device)
    if row is None:
        raise NotFound(f"no SO PIN is escrowed for device {device.id}", field="device",
                       code="no_escrow")
    row.pending_nonce, row.pending_ciphertext = sealer.seal(new_so_pin.encode("utf-8"),
                                                            _aad(device))
    row.pending_at = at
    session.flush()
    audit.record(session, "device.escrow.stage", actor=actor, at=at,
                 target=f"device:{device.id}", domain_id=device.domain_id,
                 details={"wrapping_key": sealer.key_label})


def settle_so_pin(session: Session, device: KeyDevice, *, on_token: str, actor: str,
                  at: dt.datetime) -> None:
    """The workstation reports which SO PIN the token now has: `pending` (the staged one
    becomes current) or `current` (the staged one is dropped)."""
    row = _row(session, device)
    if row is None:
        raise NotFound(f"no SO PIN is escrowed for device {device.id}", field="device",
                       code="no_escrow")
    if on_token not in ("current", "pending"):
        raise Conflict("the SO PIN on the token is 'current' or 'pending'", field="so_pin")
    if row.pending_ciphertext is None:
        if on_token == "pending":
            raise Conflict("no staged SO PIN to commit", field="so_pin", code="no_pending")
        return
    if on_token == "pending":
        row.nonce, row.ciphertext, row.created_at = (row.pending_nonce, row.pending_ciphertext,
                                                     at)
    row.pending_nonce = row.pending_ciphertext = row.pending_at = None
    session.flush()
    audit.record(session, "device.escrow.rotate" if on_token == "pending"
                 else "device.escrow.unstage", actor=actor, at=at,
                 target=f"device:{device.id}", domain_id=device.domain_id, details={})
