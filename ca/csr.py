"""Certificate signing requests: strict parsing and the checks made before any policy."""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1_alt_modules import rfc2986

from ca.errors import BadCSR, PolicyViolation
from ca.keys import KeySpec, check_public_key, describe, spki_sha256
from ca.names import check_name_text

MAX_CSR_BYTES = 64 * 1024
_PEM_RE = re.compile(rb"-----BEGIN (NEW )?CERTIFICATE REQUEST-----\s*(.*?)\s*-----END (NEW )?"
                     rb"CERTIFICATE REQUEST-----", re.S)
_ACCEPTED_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


@dataclass(frozen=True)
class ParsedCSR:
    csr: x509.CertificateSigningRequest
    der: bytes
    key_spec: KeySpec
    spki_sha256: str

    @property
    def public_key(self):
        return self.csr.public_key()


def _to_der(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8", "strict")
    if len(data) > MAX_CSR_BYTES:
        raise BadCSR(f"the CSR is {len(data)} bytes; at most {MAX_CSR_BYTES} bytes are accepted",
                     field="csr", code="csr_too_large")
    if not data.strip():
        raise BadCSR("the CSR is empty", field="csr", code="csr_empty")
    if b"-----BEGIN" in data:
        blocks = _PEM_RE.findall(data)
        if len(blocks) != 1:
            raise BadCSR("the PEM text must hold exactly one CERTIFICATE REQUEST block",
                         field="csr", code="csr_malformed")
        body = re.sub(rb"\s+", b"", blocks[0][1])
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadCSR("the PEM block is not valid base64", field="csr",
                         code="csr_malformed") from None
    return data


def parse_csr(data: bytes | str) -> ParsedCSR:
    """PEM or DER -> ParsedCSR. Refuses non-DER encodings, bad signatures, weak hashes and
    control characters in the subject. Key policy is checked separately (`check_csr_key`)."""
    der = _to_der(data)
    try:
        asn1, rest = der_decoder.decode(der, asn1Spec=rfc2986.CertificationRequest())
    except (PyAsn1Error, Exception):  # pyasn1 raises a variety of errors on garbage
        raise BadCSR("the data is not a PKCS#10 certificate request (PEM or DER)", field="csr",
                     code="csr_malformed") from None
    if rest:
        raise BadCSR("the CSR has trailing bytes after its DER encoding", field="csr",
                     code="csr_malformed")
    try:
        if der_encoder.encode(asn1) != der:
            raise BadCSR("the CSR is not DER-encoded (non-canonical BER)", field="csr",
                         code="csr_not_der")
    except PyAsn1Error:
        raise BadCSR("the CSR could not be re-encoded as DER", field="csr",
                     code="csr_not_der") from None
    try:
        csr = x509.load_der_x509_csr(der)
        public_key = csr.public_key()
    except (ValueError, TypeError):
        raise BadCSR("the CSR could not be parsed (unsupported key or malformed fields)",
                     field="csr", code="csr_malformed") from None
    try:
        hash_alg = csr.signature_hash_algorithm
    except Exception:
        raise BadCSR("the CSR is signed with an unsupported algorithm", field="csr",
                     code="csr_signature_algorithm") from None
    if not isinstance(hash_alg, _ACCEPTED_HASHES):
        name = getattr(hash_alg, "name", "unknown").upper()
        raise BadCSR(f"the CSR is signed with {name}; SHA-256, SHA-384 or SHA-512 is required",
                     field="csr", code="csr_weak_hash")
    try:
        valid = csr.is_signature_valid
    except Exception:
        valid = False
    if not valid:
        raise BadCSR("the CSR's signature does not verify (it was altered or not signed by "
                     "its key)", field="csr", code="csr_bad_signature")
    try:
        subject = x509.Name(list(csr.subject))  # decoding of the strings happens here
    except ValueError:
        raise BadCSR("the CSR's subject is malformed (a name string is not validly encoded)",
                     field="csr", code="csr_malformed") from None
    check_name_text(subject, "the CSR subject")
    try:
        extensions = csr.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        raise BadCSR("the CSR's requested extensions are malformed", field="csr",
                     code="csr_malformed") from None
    _refuse_ca_rights(extensions)
    return ParsedCSR(csr=csr, der=der, key_spec=describe(public_key),
                     spki_sha256=spki_sha256(public_key))


def _refuse_ca_rights(extensions: x509.Extensions) -> None:
    for ext in extensions:
        value = ext.value
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise PolicyViolation("the CSR asks for CA rights (basicConstraints cA=TRUE); "
                                  "subscriber certificates cannot be CAs", field="csr",
                                  code="csr_requests_ca")
        if isinstance(value, x509.KeyUsage) and (value.key_cert_sign or value.crl_sign):
            raise PolicyViolation("the CSR asks for CA rights (keyUsage keyCertSign or cRLSign); "
                                  "subscriber certificates cannot sign certificates or CRLs",
                                  field="csr", code="csr_requests_ca")


def check_csr_key(parsed: ParsedCSR, allowed: dict[str, tuple[str, ...]]) -> KeySpec:
    return check_public_key(parsed.public_key, allowed)
