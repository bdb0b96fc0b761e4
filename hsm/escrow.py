"""SO-PIN escrow sealing: AES-256-GCM under a non-extractable wrapping key in the CA's HSM."""
from __future__ import annotations

import secrets

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.mechanisms import GCMParams

from ca.errors import IntegrityError
from hsm.pool import SessionPool

DEFAULT_LABEL = "govca-escrow-wrap"


class HsmSealer:
    """The `ca.tokens.escrow.Sealer` port: plaintext goes in, only ciphertext comes out; the
    AES key is generated inside the token, sensitive and never extractable."""

    def __init__(self, pool: SessionPool, key_label: str = DEFAULT_LABEL) -> None:
        self.pool, self.key_label = pool, key_label

    def _find(self, session: pkcs11.Session):
        keys = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                         Attribute.LABEL: self.key_label}))
        if len(keys) > 1:
            raise IntegrityError(f"several keys are labelled {self.key_label!r} in the CA "
                                 "token; the escrow key must be unique", code="escrow_key")
        return keys[0] if keys else None

    def ensure_key(self) -> bool:
        """Create the wrapping key once; True if it was created now."""
        with self.pool.rw_session() as session:
            if self._find(session) is not None:
                return False
            session.generate_key(KeyType.AES, 256, label=self.key_label, store=True, template={
                Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
                Attribute.WRAP: False, Attribute.UNWRAP: False, Attribute.SIGN: False,
                Attribute.VERIFY: False, Attribute.DERIVE: False,
                Attribute.ID: secrets.token_bytes(16)})
            return True

    def key_attributes(self) -> dict[str, bool]:
        with self.pool.session() as ps:
            key = self._key(ps.session)
            return {"sensitive": bool(key[Attribute.SENSITIVE]),
                    "extractable": bool(key[Attribute.EXTRACTABLE]),
                    "never_extractable": bool(key[Attribute.NEVER_EXTRACTABLE])}

    def _key(self, session: pkcs11.Session):
        key = self._find(session)
        if key is None:
            raise IntegrityError(f"the escrow wrapping key {self.key_label!r} is missing from "
                                 "the CA token (run `govca token escrow-key`)", code="escrow_key")
        return key

    def seal(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        nonce = secrets.token_bytes(12)
        with self.pool.session() as ps:
            ct = self._key(ps.session).encrypt(plaintext, mechanism=Mechanism.AES_GCM,
                                               mechanism_param=GCMParams(nonce, aad))
        return nonce, bytes(ct)

    def unseal(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        with self.pool.session() as ps:
            key = self._key(ps.session)
            try:
                return bytes(key.decrypt(ciphertext, mechanism=Mechanism.AES_GCM,
                                         mechanism_param=GCMParams(nonce, aad)))
            except (p11e.GeneralError, p11e.EncryptedDataInvalid, p11e.EncryptedDataLenRange):
                # SoftHSM reports a failed GCM tag as CKR_GENERAL_ERROR; caught here so the
                # session pool is not reset for what is a data problem.
                raise IntegrityError("the escrowed SO PIN does not authenticate (altered "
                                     "record or wrong wrapping key)", code="escrow_corrupt") from None
