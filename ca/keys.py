"""Public-key descriptions and the key-type policy shared by CSRs, profiles and CAs."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from ca.errors import PolicyViolation

CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


@dataclass(frozen=True)
class KeySpec:
    """('rsa', '2048') or ('ec', 'secp256r1')."""

    type: str
    spec: str

    def __str__(self) -> str:
        if self.type in ("rsa", "dsa"):
            return f"{self.type.upper()}-{self.spec}"
        if self.type == "ec":
            return f"EC {CURVE_NAMES.get(self.spec, self.spec)}"
        return self.spec

    @classmethod
    def parse(cls, text: str) -> "KeySpec":
        t = text.strip().lower().replace("_", "-")
        aliases = {"rsa2048": "rsa-2048", "rsa3072": "rsa-3072", "rsa4096": "rsa-4096",
                   "p256": "ec-secp256r1", "p-256": "ec-secp256r1", "ec-p256": "ec-secp256r1",
                   "p384": "ec-secp384r1", "p-384": "ec-secp384r1", "ec-p384": "ec-secp384r1",
                   "secp256r1": "ec-secp256r1", "secp384r1": "ec-secp384r1"}
        t = aliases.get(t, t)
        kind, _, spec = t.partition("-")
        ks = cls(kind, spec)
        if ks not in CA_KEY_SPECS:
            raise ValueError(f"unsupported key type {text!r}; use one of rsa2048, rsa3072, "
                             f"rsa4096, p256, p384")
        return ks


CA_KEY_SPECS = {KeySpec("rsa", "2048"), KeySpec("rsa", "3072"), KeySpec("rsa", "4096"),
                KeySpec("ec", "secp256r1"), KeySpec("ec", "secp384r1")}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def describe(public_key) -> KeySpec:
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeySpec("rsa", str(public_key.key_size))
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return KeySpec("ec", public_key.curve.name)
    if isinstance(public_key, dsa.DSAPublicKey):
        return KeySpec("dsa", str(public_key.key_size))
    if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return KeySpec("eddsa", type(public_key).__name__)
    return KeySpec("unknown", type(public_key).__name__)


def spki_sha256(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def check_public_key(public_key, allowed: dict[str, tuple[str, ...]]) -> KeySpec:
    """Refuse key types, sizes, curves and RSA exponents that the policy does not allow."""
    spec = describe(public_key)
    if spec.type == "dsa":
        raise PolicyViolation("DSA keys are not accepted; use RSA (2048 bits or more) or "
                              "ECDSA P-256/P-384", field="csr", code="key_type")
    if spec.type not in ("rsa", "ec"):
        raise PolicyViolation(f"{spec.spec} keys are not accepted; use RSA or ECDSA",
                              field="csr", code="key_type")
    if spec.type == "rsa":
        numbers = public_key.public_numbers()
        if public_key.key_size < 2048:
            raise PolicyViolation(f"RSA key of {public_key.key_size} bits is too small; at least "
                                  f"2048 bits are required", field="csr", code="key_size")
        if numbers.e != 65537:
            raise PolicyViolation(f"RSA public exponent {numbers.e} is not accepted; it must be "
                                  f"65537", field="csr", code="key_exponent")
    if spec.type not in allowed:
        raise PolicyViolation(f"{spec} keys are not allowed by this profile", field="csr",
                              code="key_type")
    if spec.spec not in allowed[spec.type]:
        if spec.type == "ec":
            raise PolicyViolation(f"curve {spec.spec} is not accepted; use P-256 or P-384",
                                  field="csr", code="key_curve")
        raise PolicyViolation(f"RSA key size {spec.spec} is not allowed by this profile "
                              f"(allowed: {', '.join(allowed['rsa'])})", field="csr",
                              code="key_size")
    return spec
