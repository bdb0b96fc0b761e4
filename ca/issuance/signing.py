"""Signature parameters per CA, a throwaway key of the same shape for linting, and the checks on
what the HSM returned."""
from __future__ import annotations

import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ca.errors import IntegrityError
from ca.keys import KeySpec

HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
SCHEMES = ("pkcs1v15", "pss", "ecdsa")


def sign_options(key_spec: KeySpec, scheme: str, hash_name: str) -> dict:
    """Keyword arguments for cryptography builders' sign(): algorithm and rsa_padding."""
    if hash_name not in HASHES:
        raise ValueError(f"unsupported hash {hash_name}")
    algorithm = HASHES[hash_name]()
    if key_spec.type == "rsa" and scheme == "pss":
        # RFC 4055 / Circular 15/2025: RSASSA-PSS with MGF1 of the same hash, salt = hash length.
        return {"algorithm": algorithm,
                "rsa_padding": padding.PSS(mgf=padding.MGF1(algorithm),
                                           salt_length=padding.PSS.DIGEST_LENGTH)}
    return {"algorithm": algorithm}


_lint_keys: dict[KeySpec, object] = {}
_lint_lock = threading.Lock()


class _FixedSignature:
    """The linting copy's signer: a software key of the issuer's type whose sign() returns one
    signature it made once, whatever it is asked to sign. cryptography's builder takes the
    signature algorithm from the key's type and the sign() arguments, so the TBS is
    byte-identical to the real one; the signature bytes are well-formed (a real PKCS#1 or
    ECDSA-Sig-Value) but sign nothing. The linting copy is never released: only its TBS is
    used, signed by the HSM, and check_signed verifies that real signature. This saves a
    software signature per certificate (issue 8)."""

    def _init(self, real) -> None:
        self._real = real

    @property
    def key_size(self) -> int:
        return self._real.key_size

    def public_key(self):
        return self._real.public_key()

    def private_numbers(self):
        return self._real.private_numbers()

    def private_bytes(self, *args, **kwargs):
        return self._real.private_bytes(*args, **kwargs)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


class _FixedRSA(_FixedSignature, rsa.RSAPrivateKey):
    def __init__(self, real: rsa.RSAPrivateKey) -> None:
        self._init(real)
        self._sig = real.sign(b"GovCA linting copy", padding.PKCS1v15(), hashes.SHA256())

    def sign(self, data, pad, algorithm) -> bytes:
        return self._sig

    def decrypt(self, ciphertext, pad) -> bytes:
        raise NotImplementedError("the linting key signs nothing")


class _FixedEC(_FixedSignature, ec.EllipticCurvePrivateKey):
    def __init__(self, real: ec.EllipticCurvePrivateKey) -> None:
        self._init(real)
        self._sig = real.sign(b"GovCA linting copy", ec.ECDSA(hashes.SHA256()))

    @property
    def curve(self):
        return self._real.curve

    def sign(self, data, signature_algorithm) -> bytes:
        return self._sig

    def exchange(self, algorithm, peer_public_key) -> bytes:
        raise NotImplementedError("the linting key signs nothing")


def lint_key(spec: KeySpec):
    """A key of the issuer's type, to make the linting copy of a certificate (so its TBS is
    byte-identical to the real one); see _FixedSignature. It signs nothing that is released."""
    with _lint_lock:
        key = _lint_keys.get(spec)
        if key is None:
            if spec.type == "rsa":
                # The TBS does not depend on the issuer's modulus size (the AlgorithmIdentifier
                # of PKCS#1 v1.5 and of PSS with salt = hash length is the same for every
                # size). check_signed compares the TBS anyway.
                key = _FixedRSA(rsa.generate_private_key(public_exponent=65537, key_size=1024))
            else:
                key = _FixedEC(ec.generate_private_key({"secp256r1": ec.SECP256R1(),
                                                        "secp384r1": ec.SECP384R1()}[spec.spec]))
            _lint_keys[spec] = key
        return key


def check_signed(signed: x509.Certificate, linted_tbs: bytes, issuer_public_key) -> None:
    """The HSM signed exactly what was linted, and the signature verifies."""
    if signed.tbs_certificate_bytes != linted_tbs:
        raise IntegrityError("the signed certificate differs from the linted one")
    try:
        _verify(signed, issuer_public_key)
    except Exception:
        raise IntegrityError("the HSM's signature does not verify with the CA public key") from None


def _verify(cert: x509.Certificate, public_key) -> None:
    params = cert.signature_algorithm_parameters
    if isinstance(public_key, rsa.RSAPublicKey):
        pad = params if isinstance(params, padding.PSS) else padding.PKCS1v15()
        public_key.verify(cert.signature, cert.tbs_certificate_bytes, pad,
                          cert.signature_hash_algorithm)
    else:
        public_key.verify(cert.signature, cert.tbs_certificate_bytes,
                          ec.ECDSA(cert.signature_hash_algorithm))


