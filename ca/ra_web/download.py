"""A certificate and its chain as PEM, DER or PKCS#7 (RFC 2315 certs-only), for download."""
from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from ca.errors import InvalidInput
from ca.store.models import Certificate

FORMATS = {  # name: (file suffix, media type)
    "pem": (".pem", "application/x-pem-file"),
    "der": (".cer", "application/pkix-cert"),
    "chain-pem": ("-chain.pem", "application/x-pem-file"),
    "p7b": (".p7b", "application/pkcs7-mime"),
}


def chain_of(cert: Certificate) -> list[x509.Certificate]:
    """The certificate, then its issuer and every CA above it up to the root."""
    out = [x509.load_der_x509_certificate(cert.der)]
    ca, seen = cert.ca, set()
    while ca is not None and ca.id not in seen:
        seen.add(ca.id)
        out.append(x509.load_der_x509_certificate(ca.certificate_der))
        ca = ca.parent
    return out


def render(cert: Certificate, fmt: str) -> tuple[bytes, str, str]:
    """(body, media type, file name) of the certificate in the chosen format."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format is one of {', '.join(FORMATS)}", field="format")
    chain = chain_of(cert)
    if fmt == "pem":
        body = chain[0].public_bytes(serialization.Encoding.PEM)
    elif fmt == "der":
        body = chain[0].public_bytes(serialization.Encoding.DER)
    elif fmt == "chain-pem":
        body = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    else:
        body = pkcs7.serialize_certificates(chain, serialization.Encoding.DER)
    suffix, media = FORMATS[fmt]
    return body, media, f"{cert.serial}{suffix}"
