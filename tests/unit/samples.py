"""Bad and odd CSRs for the bad-input tests, each built from real keys and real encoders."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests import factories


def ber_not_der(der: bytes) -> bytes:
    """The same CSR with the outer SEQUENCE length in a non-minimal long form: valid BER, not
    DER (X.690 10.1 requires the definite form with the minimum number of length octets)."""
    assert der[0] == 0x30
    if der[1] & 0x80:
        n = der[1] & 0x7F
        length = int.from_bytes(der[2:2 + n], "big")
        return bytes([0x30, 0x80 | (n + 1), 0x00]) + length.to_bytes(n, "big") + der[2 + n:]
    return bytes([0x30, 0x81, der[1]]) + der[2:]


def broken_signature(der: bytes) -> bytes:
    """Flip one bit in the last octet of the signature BIT STRING (the CSR's last octet)."""
    d = bytearray(der)
    d[-1] ^= 0x01
    return bytes(d)


def sha1_csr() -> bytes:
    """A CSR signed with SHA-1; cryptography refuses to make one, so openssl does."""
    key = factories.key("rsa2048")
    with tempfile.TemporaryDirectory() as tmp:
        kp = Path(tmp) / "k.pem"
        kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        out = subprocess.run(["openssl", "req", "-new", "-key", str(kp), "-sha1", "-subj",
                              "/CN=sha1", "-outform", "DER"], capture_output=True, check=True)
    csr = x509.load_der_x509_csr(out.stdout)
    assert csr.signature_hash_algorithm.name == "sha1"
    return out.stdout


def ca_rights_csrs() -> dict[str, bytes]:
    """CSRs asking for CA rights through basicConstraints or keyUsage."""
    bc = (x509.BasicConstraints(ca=True, path_length=None), True)
    ku = (x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                        data_encipherment=False, key_agreement=False, key_cert_sign=True,
                        crl_sign=True, encipher_only=False, decipher_only=False), True)
    return {"basic_constraints": factories.csr(factories.key("p256"), extensions=[bc]),
            "key_usage": factories.csr(factories.key("p256"), extensions=[ku])}


def oversized_csr() -> bytes:
    """A real CSR padded past 64 KiB with PEM explanatory text."""
    body = factories.csr(factories.key("p256"))
    return b"x" * (64 * 1024) + b"\n" + body


def resigned_with_subject_bytes(old: bytes, new: bytes) -> bytes:
    """A CSR (RSA key, CN 'abc') whose subject string bytes are replaced by `new` (same length)
    and which is signed again, so that only the string encoding is wrong."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    key = factories.key("rsa2048", fresh=False)
    der = factories.csr(key, cn="abc", encoding="der")
    csr = x509.load_der_x509_csr(der)
    cri = csr.tbs_certrequest_bytes
    assert old in cri and len(old) == len(new)
    new_cri = cri.replace(old, new)
    signature = key.sign(new_cri, padding.PKCS1v15(), hashes.SHA256())
    return der.replace(cri, new_cri).replace(csr.signature, signature)
