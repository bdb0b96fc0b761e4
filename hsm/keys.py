"""HSM keys exposed as cryptography private keys: `sign()` runs inside the token.

cryptography's CertificateBuilder, CertificateRevocationListBuilder and OCSPResponseBuilder accept
any subclass of RSAPrivateKey / EllipticCurvePrivateKey. The digest is computed here; only the
private-key operation (CKM_RSA_PKCS over a DigestInfo, CKM_RSA_PKCS_PSS over the digest, or
CKM_ECDSA over the digest) goes to the HSM. The private key never leaves the token.
"""
from __future__ import annotations

import hashlib

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from pkcs11.util.ec import encode_ec_public_key
from pkcs11.util.rsa import encode_rsa_public_key

from hsm.pool import SessionPool

# DER DigestInfo prefixes (RFC 8017 section 9.2, note 1).
DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
PSS_HASH = {
    "sha256": (pkcs11.Mechanism.SHA256, pkcs11.MGF.SHA256),
    "sha384": (pkcs11.Mechanism.SHA384, pkcs11.MGF.SHA384),
    "sha512": (pkcs11.Mechanism.SHA512, pkcs11.MGF.SHA512),
}


class NonExtractable(Exception):
    pass


_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def _digest(data: bytes, algorithm) -> tuple[bytes, str]:
    if isinstance(algorithm, utils.Prehashed):
        return data, algorithm._algorithm.name
    h = _HASHES.get(algorithm.name)
    if h is None:
        raise ValueError(f"hash {algorithm.name} is not supported for HSM signing")
    return h(data).digest(), algorithm.name


class _HsmKeyMixin:
    """What both key types share: the pool, the CKA_ID, the public key; no export."""

    # True: sign in a PKCS#11 session the calling thread keeps (SessionPool.sign), for keys that
    # sign on a hot path from many threads (the OCSP responder's, see per_thread()).
    per_thread = False

    def for_hot_path(self):
        """This key signing in the calling thread's own session (per_thread()). Callers outside
        hsm/ (the OCSP responder) reach it through the key object, not an import of hsm."""
        return per_thread(self)

    def _init(self, pool: SessionPool, key_id: bytes, public_key, label: str) -> None:
        self._pool, self._key_id, self._public, self.label = pool, key_id, public_key, label
        # The signature's size bounds the output buffer python-pkcs11 allocates per operation.
        self._sig_buffer = 2 * ((public_key.key_size + 7) // 8) + 16

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def public_key(self):
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def private_bytes(self, *args, **kwargs):
        raise NonExtractable("the key lives in the HSM and cannot be exported")

    def private_numbers(self):
        raise NonExtractable("the key lives in the HSM and cannot be exported")

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def _raw_sign(self, payload: bytes, mechanism, param=None) -> bytes:
        return self._pool.sign(self._key_id, payload, mechanism, param,
                               per_thread=self.per_thread, buffer_size=self._sig_buffer)


class HsmRSAPrivateKey(_HsmKeyMixin, rsa.RSAPrivateKey):
    def __init__(self, pool: SessionPool, key_id: bytes, public_key: rsa.RSAPublicKey,
                 label: str = "") -> None:
        self._init(pool, key_id, public_key, label)

    def sign(self, data: bytes, pad: padding.AsymmetricPadding, algorithm) -> bytes:
        digest, name = _digest(data, algorithm)
        if isinstance(pad, padding.PKCS1v15):
            return self._raw_sign(DIGEST_INFO[name] + digest, pkcs11.Mechanism.RSA_PKCS)
        if isinstance(pad, padding.PSS):
            hash_mech, mgf = PSS_HASH[name]
            salt = self._pss_salt_length(pad, len(digest))
            return self._raw_sign(digest, pkcs11.Mechanism.RSA_PKCS_PSS, (hash_mech, mgf, salt))
        raise ValueError(f"padding {pad.name} is not supported for HSM signing")

    def _pss_salt_length(self, pad: padding.PSS, digest_len: int) -> int:
        salt = pad._salt_length
        if isinstance(salt, int):
            return salt
        if isinstance(salt, padding._DigestLength):
            return digest_len
        if isinstance(salt, padding._MaxLength):
            em_len = (self.key_size - 1 + 7) // 8
            return em_len - digest_len - 2
        raise ValueError("PSS salt length AUTO is only for verification")

    def decrypt(self, ciphertext: bytes, pad) -> bytes:
        raise NotImplementedError("HSM CA keys are for signing only")

    def private_numbers(self):  # pragma: no cover - mixin raises first
        raise NonExtractable("the key lives in the HSM and cannot be exported")


class HsmECPrivateKey(_HsmKeyMixin, ec.EllipticCurvePrivateKey):
    def __init__(self, pool: SessionPool, key_id: bytes, public_key: ec.EllipticCurvePublicKey,
                 label: str = "") -> None:
        self._init(pool, key_id, public_key, label)

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise ValueError("only ECDSA is supported")
        digest, _ = _digest(data, signature_algorithm.algorithm)
        raw = self._raw_sign(digest, pkcs11.Mechanism.ECDSA)
        half = len(raw) // 2
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                          int.from_bytes(raw[half:], "big"))

    def exchange(self, algorithm, peer_public_key) -> bytes:
        raise NotImplementedError("HSM CA keys are for signing only")


def _public_from_token(p11_public) -> object:
    if p11_public.key_type == pkcs11.KeyType.RSA:
        der = encode_rsa_public_key(p11_public)
    else:
        der = encode_ec_public_key(p11_public)
    return serialization.load_der_public_key(der)


def load_key(pool: SessionPool, key_id: bytes, label: str = ""):
    """The HSM private key with CKA_ID `key_id`, as a cryptography key object."""
    with pool.session() as ps:
        public = _public_from_token(ps.public_key(key_id))
        ps.private_key(key_id)  # fail now, not at first signature, if it is missing
    return wrap(pool, key_id, public, label)


def per_thread(key):
    """The same HSM key, signing in a session of the calling thread's own instead of a pooled
    one (hsm/pool.py, "Per-thread sessions"): no pool checkout per signature. For keys that sign
    on a hot path; any other key is returned as it is."""
    if not isinstance(key, _HsmKeyMixin) or key.per_thread:
        return key
    out = wrap(key._pool, key._key_id, key._public, key.label)
    out.per_thread = True
    return out


def wrap(pool: SessionPool, key_id: bytes, public_key, label: str = ""):
    if isinstance(public_key, rsa.RSAPublicKey):
        return HsmRSAPrivateKey(pool, key_id, public_key, label)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return HsmECPrivateKey(pool, key_id, public_key, label)
    raise TypeError(f"unsupported HSM key type {type(public_key).__name__}")
