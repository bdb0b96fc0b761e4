"""Test data: subscriber CSRs made with software keys (the holder's side, not CA keys)."""
from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import NameOID

_cache: dict[str, object] = {}


def key(kind: str = "rsa2048", fresh: bool = True):
    """A subscriber key: rsa2048, rsa3072, rsa1024, rsa-e3, p256, p384, p521, p192?, dsa2048."""
    if not fresh and kind in _cache:
        return _cache[kind]
    if kind.startswith("rsa-e3"):
        k = rsa.generate_private_key(public_exponent=3, key_size=2048)
    elif kind.startswith("rsa"):
        k = rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    elif kind == "p256":
        k = ec.generate_private_key(ec.SECP256R1())
    elif kind == "p384":
        k = ec.generate_private_key(ec.SECP384R1())
    elif kind == "p521":
        k = ec.generate_private_key(ec.SECP521R1())
    elif kind == "k256":
        k = ec.generate_private_key(ec.SECP256K1())
    elif kind == "dsa2048":
        k = dsa.generate_private_key(2048)
    else:
        raise ValueError(kind)
    _cache[kind] = k
    return k


def csr(private_key=None, *, cn: str = "ignored", hash_alg=None, extensions=(),
        encoding: str = "pem") -> bytes:
    private_key = private_key or key("p256")
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    for ext, critical in extensions:
        b = b.add_extension(ext, critical=critical)
    req = b.sign(private_key, hash_alg if hash_alg is not None else hashes.SHA256())
    return req.public_bytes(serialization.Encoding.PEM if encoding == "pem"
                            else serialization.Encoding.DER)
