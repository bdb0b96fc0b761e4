"""Key generation inside the token: sensitive, non-extractable, sign-only."""
from __future__ import annotations

import secrets

import pkcs11
from pkcs11 import Attribute, KeyType
from pkcs11.util.ec import encode_named_curve_parameters

from ca.keys import KeySpec
from hsm.keys import _public_from_token, wrap
from hsm.pool import SessionPool

_CURVES = {"secp256r1": "secp256r1", "secp384r1": "secp384r1"}


def _private_template() -> dict:
    return {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.DECRYPT: False,
            Attribute.UNWRAP: False, Attribute.DERIVE: False}


def _public_template() -> dict:
    return {Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.VERIFY: True,
            Attribute.ENCRYPT: False, Attribute.WRAP: False}


def generate(pool: SessionPool, spec: KeySpec, label: str):
    """Generate a key pair of `spec` in the token with a fresh random CKA_ID; return the
    cryptography-compatible private key object (which only refers to the token key)."""
    key_id = secrets.token_bytes(16)
    priv_t = {**_private_template(), Attribute.LABEL: label, Attribute.ID: key_id}
    pub_t = {**_public_template(), Attribute.LABEL: label, Attribute.ID: key_id}
    with pool.rw_session() as session:
        if spec.type == "rsa":
            public, _private = session.generate_keypair(
                KeyType.RSA, int(spec.spec), store=True, public_template=pub_t,
                private_template=priv_t)
        elif spec.type == "ec":
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[spec.spec])},
                local=True)
            public, _private = params.generate_keypair(store=True, public_template=pub_t,
                                                       private_template=priv_t)
        else:
            raise ValueError(f"cannot generate {spec} keys in the HSM")
        public_key = _public_from_token(public)
    return wrap(pool, key_id, public_key, label)


def key_attributes(pool: SessionPool, key_id: bytes) -> dict[str, bool]:
    """The security attributes of a private key, for checks and the operations view."""
    with pool.session() as ps:
        key = ps.private_key(key_id)
        return {"sensitive": bool(key[Attribute.SENSITIVE]),
                "extractable": bool(key[Attribute.EXTRACTABLE]),
                "always_sensitive": bool(key[Attribute.ALWAYS_SENSITIVE]),
                "never_extractable": bool(key[Attribute.NEVER_EXTRACTABLE])}


def destroy(pool: SessionPool, key_id: bytes) -> None:
    """Remove a key pair (only used to undo a ceremony that failed before recording the CA)."""
    with pool.rw_session() as session:
        for cls in (pkcs11.ObjectClass.PRIVATE_KEY, pkcs11.ObjectClass.PUBLIC_KEY):
            for obj in session.get_objects({Attribute.CLASS: cls, Attribute.ID: key_id}):
                obj.destroy()
