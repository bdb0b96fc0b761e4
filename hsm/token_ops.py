"""PKCS#11 operations on a staff key device (USB token; SoftHSM in tests): initialise with an SO
PIN, set and change the user PIN, read flags and serial, generate a key on the token, build a CSR
signed on the token, write the certificate and chain, read them back."""
from __future__ import annotations

import contextlib
import ctypes
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, CertificateType, ObjectClass
from pkcs11 import exceptions as p11e

from ca.errors import CAError, Conflict, NotFound, PolicyViolation
from ca.keys import KeySpec
from hsm import keygen, library
from hsm.pool import PooledSession

CKF_TOKEN_INITIALIZED = 0x400
CKF_USER_PIN_INITIALIZED = 0x8
CKF_USER_PIN_COUNT_LOW = 0x10000
CKF_USER_PIN_FINAL_TRY = 0x20000
CKF_USER_PIN_LOCKED = 0x40000
CKF_SO_PIN_LOCKED = 0x400000
TOKEN_KEY_SPECS = (KeySpec("rsa", "2048"), KeySpec("rsa", "3072"), KeySpec("ec", "secp256r1"))
SO_PIN_ALPHABET = string.ascii_letters + string.digits
CKU_SO, CKU_USER = 0, 1
_LOGIN_RV = {0xA0: ("pin_incorrect", "wrong PIN"),
             0xA4: ("pin_locked", "the PIN is locked (too many wrong tries)"),
             0xA2: ("pin_length", "PIN length out of range"),
             0x102: ("pin_not_set", "the token has no user PIN yet"),
             0x100: ("already_logged_in", "another program is logged in to the token"),
             0xB5: ("session_exists", "close other programs using the token"),
             0xE0: ("token_removed", "the token was removed")}


class TokenError(CAError):
    """A PKCS#11 operation on a key device failed; `code` says which way."""
    code = "token_error"


@dataclass(frozen=True)
class TokenInfo:
    slot_id: int
    label: str
    serial: str
    manufacturer: str
    model: str
    flags: int

    @property
    def initialised(self) -> bool:
        return bool(self.flags & CKF_TOKEN_INITIALIZED)

    @property
    def user_pin_initialised(self) -> bool:
        return bool(self.flags & CKF_USER_PIN_INITIALIZED)

    @property
    def pin_locked(self) -> bool:
        return bool(self.flags & CKF_USER_PIN_LOCKED)

    @property
    def pin_count_low(self) -> bool:
        return bool(self.flags & CKF_USER_PIN_COUNT_LOW)

    @property
    def pin_final_try(self) -> bool:
        return bool(self.flags & CKF_USER_PIN_FINAL_TRY)


def pin_status(flags: int) -> str:
    """A word for the user-PIN flags (CK_TOKEN_INFO.flags)."""
    if flags & CKF_USER_PIN_LOCKED:
        return "locked"
    if flags & CKF_USER_PIN_FINAL_TRY:
        return "final-try"
    if flags & CKF_USER_PIN_COUNT_LOW:
        return "count-low"
    if not flags & CKF_USER_PIN_INITIALIZED:
        return "not-set"
    return "ok"


def random_so_pin(length: int = 16) -> str:
    return "".join(secrets.choice(SO_PIN_ALPHABET) for _ in range(length))


def _info(slot, token) -> TokenInfo:
    return TokenInfo(slot_id=slot.slot_id, label=token.label.strip(),
                     serial=token.serial.decode("ascii", "replace").strip(),
                     manufacturer=token.manufacturer_id.strip(), model=token.model.strip(),
                     flags=int(token.flags))


_PIN_ERRORS = {
    p11e.PinIncorrect: ("pin_incorrect", "the PIN is wrong"),
    p11e.PinLocked: ("pin_locked", "the PIN is locked (too many wrong tries)"),
    p11e.PinLenRange: ("pin_length", "the token refuses a PIN of this length"),
    p11e.PinInvalid: ("pin_invalid", "the token refuses characters of this PIN"),
    p11e.UserPinNotInitialized: ("pin_not_set", "the token has no user PIN yet"),
}


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """PKCS#11 exceptions -> one TokenError with a clear message (never the PIN)."""
    try:
        yield
    except CAError:
        raise
    except tuple(_PIN_ERRORS) as exc:
        code, text = next(v for k, v in _PIN_ERRORS.items() if isinstance(exc, k))
        raise TokenError(f"{what}: {text}", code=code) from None
    except (p11e.TokenNotPresent, p11e.DeviceRemoved, p11e.SlotIDInvalid):
        raise TokenError(f"{what}: the token was removed", code="token_removed") from None
    except p11e.PKCS11Error as exc:
        raise TokenError(f"{what}: PKCS#11 error {type(exc).__name__}",
                         code="pkcs11_error") from None


class _SessionKeys:
    """Adapter giving hsm.keygen / hsm.keys the pool interface over one open session."""

    def __init__(self, session: pkcs11.Session) -> None:
        self._ps = PooledSession(session)

    @contextlib.contextmanager
    def session(self) -> Iterator[PooledSession]:
        yield self._ps

    @contextlib.contextmanager
    def rw_session(self) -> Iterator[pkcs11.Session]:
        yield self._ps.session

    def sign(self, key_id: bytes, payload: bytes, mechanism, param=None, *,
             per_thread: bool = False, buffer_size: int = 8192) -> bytes:
        """SessionPool.sign over the one session (hsm.keys signs through it)."""
        return self._ps.private_key(key_id).sign(payload, mechanism=mechanism,
                                                 mechanism_param=param, buffer_size=buffer_size)


class StaffToken:
    """Key devices reachable through one PKCS#11 module on the RA workstation."""

    def __init__(self, module: str) -> None:
        with _errors("cannot load the PKCS#11 module"):
            self.lib = library.load(module)

    # -- finding tokens -------------------------------------------------------------------
    def tokens(self) -> list[TokenInfo]:
        out = []
        with _errors("cannot list the tokens"):
            for slot in self.lib.get_slots(token_present=True):
                try:
                    out.append(_info(slot, slot.get_token()))
                except (p11e.TokenNotPresent, p11e.TokenNotRecognised):
                    continue
        return out

    def find(self, *, serial: str | None = None, label: str | None = None) -> TokenInfo:
        found = [t for t in self.tokens() if t.initialised
                 and (serial is None or t.serial == serial)
                 and (label is None or t.label == label)]
        if not found:
            raise NotFound(f"no initialised token with {'serial ' + serial if serial else ''}"
                           f"{' label ' + label if label else ''} is connected",
                           field="token", code="token_not_found")
        if len(found) > 1:
            raise Conflict(f"{len(found)} tokens match; name it by --token-serial",
                           field="token", code="token_ambiguous")
        return found[0]

    def free_token(self) -> TokenInfo:
        """An uninitialised token (a new device, or SoftHSM's free slot)."""
        free = [t for t in self.tokens() if not t.initialised]
        if not free:
            raise NotFound("no uninitialised token is connected (no free slot)",
                           field="token", code="no_free_token")
        return free[0]

    def _token(self, serial: str):
        with _errors("cannot reach the token"):
            for slot in self.lib.get_slots(token_present=True):
                token = slot.get_token()
                if token.serial.decode("ascii", "replace").strip() == serial:
                    return token
        raise NotFound(f"token {serial} is not connected", field="token",
                       code="token_not_found")

    def info(self, serial: str) -> TokenInfo:
        token = self._token(serial)
        return _info(token.slot, token)

    # -- initialisation and PINs ----------------------------------------------------------
    def init_token(self, slot_id: int, so_pin: str, label: str) -> TokenInfo:
        """C_InitToken: erase the token and set its SO PIN and label (ctypes: python-pkcs11 has
        no binding). On an initialised token the SO PIN must be the current one."""
        raw_label = label.encode("utf-8")
        if len(raw_label) > 32:
            raise PolicyViolation("a token label is at most 32 bytes", field="label")
        fn = ctypes.CDLL(self.lib.so).C_InitToken
        fn.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        fn.restype = ctypes.c_ulong
        pin = so_pin.encode("utf-8")
        rv = fn(slot_id, pin, len(pin), raw_label.ljust(32, b" "))
        if rv != 0:
            names = {0xA0: ("so_pin_incorrect", "the SO PIN is wrong"),
                     0xA4: ("so_pin_locked", "the SO PIN is locked"),
                     0xB3: ("session_exists", "close other programs using the token"),
                     0x3: ("slot_invalid", "the slot does not exist"),
                     0xE0: ("token_removed", "the token was removed")}
            code, text = names.get(rv, ("pkcs11_error", f"rv=0x{rv:x}"))
            raise TokenError(f"cannot initialise the token: {text}", code=code)
        matches = [t for t in self.tokens() if t.initialised and t.label == label]
        if len(matches) != 1:
            raise TokenError(f"after initialisation {len(matches)} tokens carry the label "
                             f"{label!r}; use a unique label", code="label_ambiguous")
        return matches[0]

    @contextlib.contextmanager
    def _login(self, serial: str, pin: str, *, so: bool = False,
               rw: bool = False) -> Iterator[pkcs11.Session]:
        """A session logged in as user (or SO), logged out and closed on exit. C_Login is called
        here (ctypes) because python-pkcs11's open() leaks the session when the login fails."""
        token = self._token(serial)
        with _errors("cannot open a session on the token"):
            session = token.open(rw=rw)
        try:
            data = pin.encode("utf-8")
            rv = self._fn("C_Login")(session.handle, CKU_SO if so else CKU_USER, data, len(data))
            if rv != 0:
                code, text = _LOGIN_RV.get(rv, ("pkcs11_error", f"rv=0x{rv:x}"))
                who = "security officer" if so else "user"
                raise TokenError(f"the token refused the {who} login: {text}", code=code)
            try:
                with _errors("token operation failed"):
                    yield session
            finally:
                self._fn("C_Logout")(session.handle)
        finally:
            with contextlib.suppress(Exception):
                session.close()

    def _fn(self, name: str):
        fn = getattr(ctypes.CDLL(self.lib.so), name)
        if name == "C_Login":
            fn.argtypes = [ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong]
        else:
            fn.argtypes = [ctypes.c_ulong]
        fn.restype = ctypes.c_ulong
        return fn

    def init_user_pin(self, serial: str, so_pin: str, user_pin: str) -> None:
        """C_InitPIN as SO: set (or reset, when locked or forgotten) the user PIN."""
        with self._login(serial, so_pin, so=True, rw=True) as session:
            session.init_pin(user_pin)

    def change_so_pin(self, serial: str, old_so_pin: str, new_so_pin: str) -> None:
        """C_SetPIN as SO (rotation of the SO PIN after it was released for an unblock)."""
        with self._login(serial, old_so_pin, so=True, rw=True) as session:
            session.set_pin(old_so_pin, new_so_pin)

    def change_user_pin(self, serial: str, old_pin: str, new_pin: str) -> None:
        """C_SetPIN as the user (the holder changes the PIN)."""
        with self._login(serial, old_pin, rw=True) as session:
            session.set_pin(old_pin, new_pin)

    def try_login(self, serial: str, user_pin: str) -> TokenInfo:
        """Log in once and out again; raise TokenError(pin_incorrect/pin_locked) if refused."""
        with self._login(serial, user_pin):
            pass
        return self.info(serial)

    @contextlib.contextmanager
    def user_session(self, serial: str, user_pin: str, rw: bool = False) -> Iterator[_SessionKeys]:
        with self._login(serial, user_pin, rw=rw) as session:
            yield _SessionKeys(session)

    # -- keys, CSR, certificates ----------------------------------------------------------
    def generate_key(self, serial: str, user_pin: str, spec: KeySpec, label: str) -> bytes:
        """A sensitive, non-extractable signing key pair generated on the token; its CKA_ID."""
        if spec not in TOKEN_KEY_SPECS:
            raise PolicyViolation(f"{spec} keys are not made on tokens; use rsa2048, rsa3072 or "
                                  "p256", field="key")
        with self.user_session(serial, user_pin, rw=True) as keys:
            key = keygen.generate(keys, spec, label)
            return key.key_id

    def key_attributes(self, serial: str, user_pin: str, key_id: bytes) -> dict[str, bool]:
        with self.user_session(serial, user_pin) as keys:
            with keys.session() as ps:
                key = ps.private_key(key_id)
                return {"sensitive": bool(key[Attribute.SENSITIVE]),
                        "extractable": bool(key[Attribute.EXTRACTABLE]),
                        "never_extractable": bool(key[Attribute.NEVER_EXTRACTABLE]),
                        "local": bool(key[Attribute.LOCAL])}

    @contextlib.contextmanager
    def private_key(self, serial: str, user_pin: str, key_id: bytes):
        """The token key as a cryptography private key, valid inside the block."""
        from hsm.keys import load_key
        with self.user_session(serial, user_pin) as keys:
            yield load_key(keys, key_id)

    def make_csr(self, serial: str, user_pin: str, key_id: bytes, common_name: str) -> bytes:
        """A PKCS#10 request signed on the token (the CA takes the subject from the registry)."""
        with self.private_key(serial, user_pin, key_id) as key:
            csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
                [x509.NameAttribute(NameOID.COMMON_NAME, common_name)])).sign(key, hashes.SHA256())
        return csr.public_bytes(serialization.Encoding.DER)

    def store_certificates(self, serial: str, user_pin: str, key_id: bytes, label: str,
                           certificate: bytes, chain: list[bytes]) -> None:
        """Write the holder's certificate (same CKA_ID as its key) and the CA chain as
        CKO_CERTIFICATE objects; the certificate must match the key on the token."""
        cert = x509.load_der_x509_certificate(certificate)
        with self.user_session(serial, user_pin, rw=True) as keys:
            with keys.session() as ps:
                from hsm.keys import _public_from_token
                on_token = _public_from_token(ps.public_key(key_id))
                if on_token != cert.public_key():
                    raise Conflict("the certificate does not match the key on the token",
                                   field="certificate", code="key_mismatch")
                session = ps.session
                session.create_object(_cert_template(cert, label, key_id))
                for i, der in enumerate(chain):
                    ca = x509.load_der_x509_certificate(der)
                    if any(True for _ in session.get_objects({
                            Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.VALUE: der})):
                        continue
                    session.create_object(_cert_template(ca, f"{label}-ca{i + 1}", None))

    def certificates(self, serial: str) -> list[bytes]:
        """Every X.509 certificate object on the token (public objects: no login)."""
        token = self._token(serial)
        with _errors("cannot read the token"):
            with token.open() as session:
                return [bytes(o[Attribute.VALUE]) for o in session.get_objects(
                    {Attribute.CLASS: ObjectClass.CERTIFICATE})]

    def destroy_key(self, serial: str, user_pin: str, key_id: bytes) -> None:
        with self.user_session(serial, user_pin, rw=True) as keys:
            session = keys._ps.session
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE):
                for obj in session.get_objects({Attribute.CLASS: cls, Attribute.ID: key_id}):
                    obj.destroy()


def _der_integer(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 8) // 8 or 1, "big", signed=True)
    return bytes([0x02, len(body)]) + body if len(body) < 128 else \
        bytes([0x02, 0x81, len(body)]) + body


def _cert_template(cert: x509.Certificate, label: str, key_id: bytes | None) -> dict:
    t = {Attribute.CLASS: ObjectClass.CERTIFICATE,
         Attribute.CERTIFICATE_TYPE: CertificateType.X_509, Attribute.TOKEN: True,
         Attribute.PRIVATE: False, Attribute.LABEL: label,
         Attribute.SUBJECT: cert.subject.public_bytes(), Attribute.ISSUER: cert.issuer.public_bytes(),
         Attribute.SERIAL_NUMBER: _der_integer(cert.serial_number),
         Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER)}
    if key_id is not None:
        t[Attribute.ID] = key_id
    return t
