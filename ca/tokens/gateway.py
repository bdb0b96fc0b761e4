"""GovCA's side of the RA-workstation token protocol, exposed one to one by /api/v1/tokens/*.

Every method takes and returns JSON-ready values (DER as base64), so the same object serves an
in-process caller (`govca token` on the CA's own console) and the REST API. With a `caller`
(the API) every device and holder is looked up inside the caller's delegation: outside it they
answer exactly like missing ones. Enrolment needs the `subscriber.write` permission (RA officer,
central operator); an unblock may also be run by the holder (with the token in hand).
"""
from __future__ import annotations

import base64
import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from ca.ra.roles import Caller
from ca.ra.scope import Scope
from ca.registry import find_subscriber
from ca.store.database import Database
from ca.store.models import CertificateAuthority, Subscriber
from ca.store.models_tokens import KeyDevice
from ca.tokens import escrow, registry, unblock
from ca.tokens.escrow import Sealer


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise InvalidInput(f"{field} is not base64", field=field) from None


class TokenGateway:
    def __init__(self, db: Database, clock: Clock, issuance, sealer: Sealer, *,
                 actor: str | None = None, caller: Caller | None = None,
                 ca: str = "issuing", profile: str = "personal") -> None:
        if actor is None and caller is None:
            raise ValueError("a TokenGateway acts for an actor or a caller")
        self.db, self.clock, self.issuance, self.sealer = db, clock, issuance, sealer
        self.caller = caller
        self.actor = actor or caller.actor
        self.ca, self.profile = ca, profile

    # -- delegation -----------------------------------------------------------------------
    def _visible(self, s: Session, holder_id: int) -> bool:
        if self.caller is None:
            return True
        return s.execute(select(Subscriber.id).where(
            Subscriber.id == holder_id, Scope(s, self.caller).subscribers())).first() is not None

    def _may(self, holder_id: int, unblock_op: bool) -> bool:
        if self.caller is None or self.caller.can("subscriber.write"):
            return True
        return unblock_op and self.caller.subscriber_id == holder_id

    def _check(self, s: Session, holder_id: int, unblock_op: bool, missing: Exception) -> None:
        if not self._visible(s, holder_id):
            raise missing
        if not self._may(holder_id, unblock_op):
            what = "unblock this token" if unblock_op else "enrol tokens"
            raise PermissionDenied(f"the role {self.caller.role} may not {what}",
                                   code="forbidden")

    def _device(self, s: Session, device_id: int, serial: str | None = None, *,
                unblock_op: bool = False) -> KeyDevice:
        try:
            dev = registry.get_device(s, int(device_id), for_update=True)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInput("device_id is an integer", field="device_id") from None
        except NotFound:
            dev = None
        missing = NotFound(f"no key device with id {device_id}", field="device")
        if dev is None:
            raise missing
        self._check(s, dev.holder_id, unblock_op, missing)
        if serial is not None and dev.serial != serial:
            raise Conflict(f"the token presented (serial {serial}) is not device {dev.id} "
                           f"(registered serial {dev.serial})", field="serial",
                           code="device_mismatch")
        return dev

    # -- enrolment ------------------------------------------------------------------------
    def start(self, *, subscriber: str | int, label: str, manufacturer: str = "",
              model: str = "", serial: str | None = None, device_type: str = "TOKEN") -> dict:
        """Register a new device, or (serial given: a token already initialised by an enrolment
        that failed) find it and release its SO PIN so it can be initialised again."""
        now = self.clock.now()
        with self.db.transaction() as s:
            holder = find_subscriber(s, subscriber)
            self._check(s, holder.id, False, NotFound(  # the same answer as a missing one
                f"no subscriber with id or username {str(subscriber).strip()!r}",
                field="subscriber"))
            if serial:
                dev = s.execute(select(KeyDevice).where(
                    KeyDevice.serial == serial, KeyDevice.manufacturer == manufacturer,
                    KeyDevice.model == model)).scalar_one_or_none()
                if dev is None:
                    raise Conflict(f"token {serial} is initialised but unknown to GovCA; it "
                                   "cannot be re-initialised here", field="token",
                                   code="unknown_token")
                if dev.holder_id != holder.id:
                    raise Conflict(f"token {serial} is registered to another holder",
                                   field="token", code="holder_mismatch")
                if dev.state not in ("new", "initialised"):
                    raise Conflict(f"token {serial} is {dev.state}; only a token whose "
                                   "enrolment failed can be enrolled again", field="token",
                                   code="device_in_service")
                so_pin, pending = escrow.release_so_pin(s, dev, self.sealer, actor=self.actor,
                                                        at=now, purpose="re-initialise",
                                                        with_pending=True)
                return {"device_id": dev.id, "so_pin": so_pin, "so_pin_pending": pending,
                        "holder": holder.full_name}
            dev = registry.register_device(s, holder_id=holder.id, device_type=device_type,
                                           label=label, manufacturer=manufacturer, model=model,
                                           actor=self.actor, at=now)
            return {"device_id": dev.id, "so_pin": None, "holder": holder.full_name}

    def escrow(self, *, device_id: int, so_pin: str) -> dict:
        """Keep the SO PIN (ciphertext only) before it is ever set on the token."""
        with self.db.transaction() as s:
            dev = self._device(s, device_id)
            if dev.state != "new" or escrow.has_escrow(s, dev.id):
                raise Conflict(f"device {dev.id} ({dev.state}): its SO PIN is already escrowed",
                               field="device", code="escrow_exists")
            escrow.store_so_pin(s, dev, so_pin, self.sealer, actor=self.actor,
                                at=self.clock.now())
        return {"ok": True}

    def initialised(self, *, device_id: int, serial: str) -> dict:
        now = self.clock.now()
        with self.db.transaction() as s:
            dev = self._device(s, device_id)
            if not escrow.has_escrow(s, dev.id):
                raise Conflict("no SO PIN is escrowed for this device", field="device",
                               code="no_escrow")
            registry.bind_serial(s, dev, serial, actor=self.actor, at=now)
            registry.transition(s, dev, "initialised", actor=self.actor, at=now,
                                reason="token initialised on the RA workstation")
        return {"ok": True}

    def issue(self, *, device_id: int, serial: str, csr: str, key_ref: str) -> dict:
        """Issue the holder's certificate for a key already stored on the token."""
        from ca.issuance.service import IssueRequest
        with self.db.transaction() as s:
            dev = self._device(s, device_id, serial)
            if dev.state != "initialised":
                raise Conflict(f"device {dev.id} is {dev.state}, not being enrolled",
                               field="device", code="bad_state")
            holder_id = dev.holder_id
        row = self.issuance.issue(IssueRequest(
            ca=self.ca, profile=self.profile, csr=unb64(csr, "csr"), actor=self.actor,
            subscriber_id=holder_id, details={"device_id": int(device_id), "key_ref": key_ref}))
        with self.db.transaction() as s:
            dev = self._device(s, device_id, serial)
            registry.attach_certificate(s, dev, row.id, actor=self.actor, at=self.clock.now(),
                                        key_ref=key_ref)
            chain = self._chain(s, row.ca_id)
        return {"certificate": b64(row.der), "serial": row.serial,
                "chain": [b64(d) for d in chain]}

    def _chain(self, s: Session, ca_id: int) -> list[bytes]:
        out, seen = [], set()
        ca = s.get(CertificateAuthority, ca_id)
        while ca is not None and ca.id not in seen:
            seen.add(ca.id)
            out.append(ca.certificate_der)
            ca = ca.parent
        return out

    def complete(self, *, device_id: int, serial: str) -> dict:
        with self.db.transaction() as s:
            dev = self._device(s, device_id, serial)
            if not registry.device_certificates(s, dev.id):
                raise Conflict("no certificate was issued for this device", field="device")
            registry.transition(s, dev, "issued", actor=self.actor, at=self.clock.now(),
                                reason="enrolment complete")
        return {"ok": True}

    def abort(self, *, device_id: int, reason: str, serial: str | None = None) -> dict:
        """An enrolment failed: revoke what was issued for the wiped key. A device whose token
        was never initialised is retired; one whose token carries the escrowed SO PIN (serial
        given) stays re-initialisable (`start` with that serial releases the SO PIN)."""
        now = self.clock.now()
        with self.db.transaction() as s:
            dev = self._device(s, device_id)
            if serial and dev.serial is None:
                try:
                    registry.bind_serial(s, dev, serial, actor=self.actor, at=now)
                except Conflict:
                    pass
            state = dev.state
            pending = registry.certificates_to_revoke(s, dev, now, "cessationOfOperation")
            audit.record(s, "device.enrol.failed", actor=self.actor, at=now,
                         target=f"device:{dev.id}", domain_id=dev.domain_id,
                         details={"reason": reason[:500], "state": state,
                                  "to_revoke": [p.serial for p in pending]})
            if state == "new" and dev.serial is None:
                registry.transition(s, dev, "retired", actor=self.actor, at=now,
                                    reason="enrolment failed before initialisation")
                state = "retired"
        from ca.revocation import revoke
        for p in pending:
            revoke(self.db, self.clock, serial=p.serial, ca=p.ca, reason=p.reason,
                   actor=self.actor, details={"device_id": int(device_id),
                                              "why": "enrolment failed; key wiped"})
        return {"revoked": [p.serial for p in pending], "state": state}

    # -- unblock --------------------------------------------------------------------------
    def redeem_unblock(self, *, code: str, serial: str, certificates: list[str]) -> dict:
        """Verify and consume a one-time code for the token with `serial`; the token must carry
        a certificate registered for that device. Returns the escrowed SO PIN (released in the
        HSM, audited) for one C_InitPIN on the workstation."""
        presented = {hashlib.sha256(unb64(c, "certificates")).hexdigest() for c in certificates}

        def verify(s: Session, dev: KeyDevice) -> None:
            # A code of a device outside the caller's delegation answers like an unknown code.
            self._check(s, dev.holder_id, True, unblock.UnblockRefused(
                "this unblock code is not valid", field="code", code="unblock_code_wrong"))
            registered = {c.fingerprint_sha256 for c in registry.device_certificates(s, dev.id)}
            if registered and not registered & presented:
                raise Conflict("the token presented does not hold the certificate registered "
                               "for this device", field="token", code="device_mismatch")

        def release(s: Session, dev: KeyDevice, redeemed: unblock.Redeemed):
            return escrow.release_so_pin(s, dev, self.sealer, actor=self.actor,
                                         at=self.clock.now(), purpose="unblock",
                                         request_ref=redeemed.request_ref, with_pending=True)

        redeemed, (so_pin, pending) = unblock.redeem(
            self.db, self.clock, code=code, device_serial=serial, actor=self.actor,
            verify=verify, on_success=release)
        return {"device_id": redeemed.device_id, "so_pin": so_pin, "so_pin_pending": pending,
                "authorisation_id": redeemed.authorisation_id}

    def _unblocking(self, s: Session, device_id: int, serial: str,
                    authorisation_id: int) -> KeyDevice:
        """SO-PIN rotation calls are only accepted right after this device's code was used."""
        from ca.store.models_tokens import UnblockAuthorisation
        dev = self._device(s, device_id, serial, unblock_op=True)
        auth = s.get(UnblockAuthorisation, int(authorisation_id))
        if (auth is None or auth.device_id != dev.id or auth.consumed_at is None
                or self.clock.now() - auth.consumed_at > unblock.CODE_TTL):
            raise Conflict("no unblock of this device is in progress", field="authorisation",
                           code="no_unblock_in_progress")
        return dev

    def so_pin_state(self, *, device_id: int, serial: str, authorisation_id: int,
                     on_token: str) -> dict:
        """The workstation reports which escrowed SO PIN opened the token."""
        with self.db.transaction() as s:
            dev = self._unblocking(s, device_id, serial, authorisation_id)
            escrow.settle_so_pin(s, dev, on_token=on_token, actor=self.actor,
                                 at=self.clock.now())
        return {"ok": True}

    def stage_so_pin(self, *, device_id: int, serial: str, authorisation_id: int,
                     so_pin: str) -> dict:
        """Escrow the replacement SO PIN before the workstation sets it on the token."""
        with self.db.transaction() as s:
            dev = self._unblocking(s, device_id, serial, authorisation_id)
            escrow.stage_so_pin(s, dev, so_pin, self.sealer, actor=self.actor,
                                at=self.clock.now())
        return {"ok": True}

    def unblock_done(self, *, device_id: int, serial: str, ok: bool, detail: str = "",
                     authorisation_id: int | None = None, so_pin_on_token: str | None = None
                     ) -> dict:
        now = self.clock.now()
        with self.db.transaction() as s:
            dev = self._device(s, device_id, serial, unblock_op=True)
            if ok and authorisation_id is None:
                raise InvalidInput("authorisation_id is required: a device is restored only by "
                                   "the unblock that used its code", field="authorisation_id")
            if authorisation_id is not None:  # only right after this device's code was used
                self._unblocking(s, device_id, serial, authorisation_id)
            if so_pin_on_token and authorisation_id is not None:
                escrow.settle_so_pin(s, dev, on_token=so_pin_on_token, actor=self.actor, at=now)
            if ok:
                registry.transition(s, dev, "restored", actor=self.actor, at=now,
                                    reason="new user PIN set by the holder")
            else:
                audit.record(s, "device.unblock.incomplete", actor=self.actor, at=now,
                             target=f"device:{dev.id}", domain_id=dev.domain_id,
                             details={"detail": detail[:500]})
        return {"ok": True}
