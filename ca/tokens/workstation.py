"""The RA-workstation procedures (enrol a token, unblock it) over two ports: the token device
(hsm.token_ops.StaffToken) and GovCA (ca.tokens.gateway.TokenGateway in process, or
ca.tokens.transport.HttpGateway: the same methods over /api/v1/tokens/*).

Enrolment order, chosen so that a failure at any step leaves nothing half-done:
 1. check the holder's PIN against the policy (nothing touched yet)
 2. GovCA registers the device (state new)             | or releases the SO PIN of a token
 3. GovCA escrows a fresh random SO PIN                 | whose earlier enrolment failed
 4. C_InitToken with that SO PIN; GovCA binds the serial (state initialised)
 5. C_InitPIN: the holder's PIN; key pair generated on the token; its attributes checked
 6. CSR signed on the token -> GovCA issues, for a key that is stored on the token
 7. certificate and chain written to the token; GovCA marks the device issued
On failure after 4 the token is wiped again with the escrowed SO PIN (re-initialisable) and
GovCA revokes whatever it issued for the wiped key; before 4 the device row is retired.
"""
from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ca.errors import CAError, Conflict, IntegrityError
from ca.keys import KeySpec
from ca.tokens.pin_policy import check_pin

log = logging.getLogger(__name__)


class Device(Protocol):  # hsm.token_ops.StaffToken
    def free_token(self) -> Any: ...
    def find(self, *, serial: str | None = None, label: str | None = None) -> Any: ...
    def info(self, serial: str) -> Any: ...
    def init_token(self, slot_id: int, so_pin: str, label: str) -> Any: ...
    def init_user_pin(self, serial: str, so_pin: str, user_pin: str) -> None: ...
    def change_so_pin(self, serial: str, old_so_pin: str, new_so_pin: str) -> None: ...
    def try_login(self, serial: str, user_pin: str) -> Any: ...
    def generate_key(self, serial: str, user_pin: str, spec: KeySpec, label: str) -> bytes: ...
    def key_attributes(self, serial: str, user_pin: str, key_id: bytes) -> dict: ...
    def make_csr(self, serial: str, user_pin: str, key_id: bytes, common_name: str) -> bytes: ...
    def store_certificates(self, serial: str, user_pin: str, key_id: bytes, label: str,
                           certificate: bytes, chain: list[bytes]) -> None: ...
    def certificates(self, serial: str) -> list[bytes]: ...


class Gateway(Protocol):  # ca.tokens.gateway.TokenGateway, or transport.HttpGateway
    def start(self, **kw) -> dict: ...
    def escrow(self, **kw) -> dict: ...
    def initialised(self, **kw) -> dict: ...
    def issue(self, **kw) -> dict: ...
    def complete(self, **kw) -> dict: ...
    def abort(self, **kw) -> dict: ...
    def redeem_unblock(self, **kw) -> dict: ...
    def so_pin_state(self, **kw) -> dict: ...
    def stage_so_pin(self, **kw) -> dict: ...
    def unblock_done(self, **kw) -> dict: ...


@dataclass(frozen=True)
class Enrolled:
    device_id: int
    serial: str
    certificate_serial: str
    certificate: bytes
    key_id: bytes


def enrol(device: Device, gateway: Gateway, *, subscriber: str, label: str, user_pin: str,
          key_spec: KeySpec, random_so_pin: Callable[[], str], token_serial: str | None = None,
          echo: Callable[[str], None] = lambda m: None) -> Enrolled:
    check_pin(user_pin, field="pin")                                              # 1
    if token_serial:
        info = device.find(serial=token_serial)
    else:
        info = device.free_token()
    again = info.initialised
    started = gateway.start(subscriber=subscriber, label=label, manufacturer=info.manufacturer,
                            model=info.model, serial=info.serial if again else None)   # 2
    device_id = started["device_id"]
    initialised = False
    try:
        if again:
            so_pin, info = _reinit(device, info, started, label)
        else:
            so_pin = random_so_pin()
            gateway.escrow(device_id=device_id, so_pin=so_pin)                       # 3
            info = device.init_token(info.slot_id, so_pin, label)                    # 4
        initialised = True
        serial = info.serial
        gateway.initialised(device_id=device_id, serial=serial)
        echo(f"token {serial} initialised (label {label}); SO PIN escrowed in GovCA")
        device.init_user_pin(serial, so_pin, user_pin)                               # 5
        key_id = device.generate_key(serial, user_pin, key_spec, label)
        attrs = device.key_attributes(serial, user_pin, key_id)
        if attrs.get("extractable") or not attrs.get("sensitive") or not attrs.get("local"):
            raise IntegrityError(f"the token key has unsafe attributes {attrs}")
        csr = device.make_csr(serial, user_pin, key_id, started.get("holder") or label)  # 6
        issued = gateway.issue(device_id=device_id, serial=serial,
                               csr=base64.b64encode(csr).decode(), key_ref=key_id.hex())
        cert = base64.b64decode(issued["certificate"])
        chain = [base64.b64decode(c) for c in issued["chain"]]
        device.store_certificates(serial, user_pin, key_id, label, cert, chain)      # 7
        gateway.complete(device_id=device_id, serial=serial)
    except BaseException as exc:
        _undo(device, gateway, device_id, info if initialised else None,
              so_pin if initialised else None, label, exc)
        raise
    echo(f"certificate {issued['serial']} written to token {serial}")
    return Enrolled(device_id=device_id, serial=serial, certificate_serial=issued["serial"],
                    certificate=cert, key_id=key_id)


def _reinit(device: Device, info, started: dict, label: str):
    """Initialise again with the escrowed SO PIN (or the staged one, if a rotation's
    confirmation was lost)."""
    candidates = [p for p in (started["so_pin"], started.get("so_pin_pending")) if p]
    for i, so_pin in enumerate(candidates):
        try:
            return so_pin, device.init_token(info.slot_id, so_pin, label)
        except CAError as exc:
            if exc.code != "so_pin_incorrect" or i == len(candidates) - 1:
                raise
    raise Conflict("no SO PIN is escrowed for this token", field="token")  # pragma: no cover


def _detail(exc: BaseException) -> str:
    """What GovCA records about a failure: one line, bounded (never a PIN: CAError messages
    do not carry them)."""
    text = exc.message if isinstance(exc, CAError) else type(exc).__name__
    return " ".join(text.split())[:500]


def _undo(device: Device, gateway: Gateway, device_id: int, info, so_pin: str | None,
          label: str, exc: BaseException) -> None:
    reason = _detail(exc)
    if info is not None and so_pin is not None:
        try:
            device.init_token(info.slot_id, so_pin, label)  # wipe: no key, no certificate
        except Exception as wipe:  # pragma: no cover - the token itself failed
            log.error("could not wipe token %s after a failed enrolment: %s", info.serial,
                      type(wipe).__name__)
    try:
        gateway.abort(device_id=device_id, reason=reason,
                      serial=info.serial if info is not None else None)
    except Exception as abort_exc:  # pragma: no cover - GovCA unreachable
        log.error("GovCA did not record the failed enrolment of device %s: %s", device_id,
                  type(abort_exc).__name__)


@dataclass(frozen=True)
class Unblocked:
    device_id: int
    serial: str
    so_pin_rotated: bool


def unblock(device: Device, gateway: Gateway, *, code: str, new_pin: str,
            random_so_pin: Callable[[], str], label: str | None = None,
            token_serial: str | None = None,
            echo: Callable[[str], None] = lambda m: None) -> Unblocked:
    """Redeem the one-time code for THIS token (serial and certificates checked by GovCA), log
    in as SO with the released SO PIN and set the holder's new PIN, which never leaves here.
    Then the SO PIN is rotated (new one escrowed first), so the released one is worthless."""
    check_pin(new_pin, field="new_pin")
    info = device.find(serial=token_serial, label=label)
    certs = device.certificates(info.serial)
    if not certs:
        raise Conflict(f"token {info.serial} holds no certificate; it is not an enrolled token",
                       field="token", code="device_mismatch")
    released = gateway.redeem_unblock(code=code, serial=info.serial,
                                      certificates=[base64.b64encode(c).decode() for c in certs])
    ids = {"device_id": released["device_id"], "serial": info.serial,
           "authorisation_id": released["authorisation_id"]}
    candidates = [(n, released.get(k)) for n, k in (("current", "so_pin"),
                                                    ("pending", "so_pin_pending"))]
    candidates = [(n, p) for n, p in candidates if p]
    released.clear()
    try:
        used, so_pin = _init_pin(device, info.serial, candidates, new_pin)
        device.try_login(info.serial, new_pin)
    except BaseException as exc:
        gateway.unblock_done(**ids, ok=False, detail=_detail(exc))
        raise
    if used == "pending":  # an earlier rotation reached the token but not GovCA
        gateway.so_pin_state(**ids, on_token="pending")
    on_token = "current"
    try:
        new_so = random_so_pin()
        gateway.stage_so_pin(**ids, so_pin=new_so)
        device.change_so_pin(info.serial, so_pin, new_so)
        on_token = "pending"
    except CAError as exc:
        log.warning("the SO PIN of token %s was not rotated: %s", info.serial, exc.code)
    gateway.unblock_done(**ids, ok=True, so_pin_on_token=on_token)
    echo(f"token {info.serial}: new PIN set; the unblock code is used up"
         + ("; SO PIN rotated" if on_token == "pending" else ""))
    return Unblocked(device_id=ids["device_id"], serial=info.serial,
                     so_pin_rotated=on_token == "pending")


def _init_pin(device: Device, serial: str, candidates: list[tuple[str, str]],
              new_pin: str) -> tuple[str, str]:
    for i, (name, so_pin) in enumerate(candidates):
        try:
            device.init_user_pin(serial, so_pin, new_pin)
            return name, so_pin
        except CAError as exc:
            if exc.code != "pin_incorrect" or i == len(candidates) - 1:
                raise
    raise Conflict("GovCA released no SO PIN", field="token")  # pragma: no cover
