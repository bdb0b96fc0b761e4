"""Certificate signing requests: strict parsing and the checks made before any policy."""
from __future__ import annotations

import base64
import binascii
import functools
import re
import threading
from dataclasses import dataclass
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import hashes
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

    @functools.cached_property
    def public_key(self):  # built once: the RA's key checks and issuance each ask for it
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


class _NotDER(Exception):
    """The data is valid BER (or at least well-formed TLVs) but not DER."""


class _Malformed(Exception):
    """The data is not a sequence of well-formed TLVs."""


_STRUCTURED = (0x30, 0x31)  # SEQUENCE, SET: the only constructed universal types DER allows


def _check_der(der: bytes) -> None:
    """Every TLV of the CSR, nested ones included (also inside ANY-typed values such as
    attribute values and algorithm parameters), is in DER (X.690 clause 10 and 11): definite
    lengths in the fewest octets, low tag numbers in one octet, universal string types only in
    primitive form, minimal INTEGERs, BOOLEAN 00 or FF, BIT STRING padding bits zero, NULL
    empty, SET OF elements in ascending order of their encodings (also the [0] IMPLICIT SET OF
    attributes of the CertificationRequestInfo), no trailing bytes. cryptography's Rust parser
    then checks the structure and types."""
    try:
        end = _walk(der, 0, len(der), depth=0, role=_ROOT)
        if end != len(der):
            raise _Malformed()
    except (_NotDER, _Malformed, IndexError) as exc:
        _refuse(der, exc)


def _refuse(der: bytes, exc: Exception) -> NoReturn:
    """The reason given for a CSR the walk refused: the one the previous check (pyasn1's DER
    codec against the PKCS#10 ASN.1 module: decode, then re-encode and compare) gives for it,
    so that garbage is "not a PKCS#10 request" rather than "not DER"; the walk's own finding
    where that check saw nothing (it copied ANY-typed values unchecked). Error path only."""
    from pyasn1.codec.ber import decoder as ber_decoder
    from pyasn1.codec.der import decoder as der_decoder
    from pyasn1.codec.der import encoder as der_encoder
    from pyasn1_alt_modules import rfc2986
    try:
        asn1, rest = der_decoder.decode(der, asn1Spec=rfc2986.CertificationRequest())
    except Exception:  # pyasn1 raises a variety of errors on garbage
        try:  # a PKCS#10 request in BER that the DER decoder refuses (indefinite lengths)
            _asn1, rest = ber_decoder.decode(der, asn1Spec=rfc2986.CertificationRequest())
            ber = not rest
        except Exception:
            ber = False
        if ber and isinstance(exc, _NotDER):
            raise BadCSR(f"the CSR is not DER-encoded ({exc})", field="csr",
                         code="csr_not_der") from None
        raise BadCSR("the data is not a PKCS#10 certificate request (PEM or DER)", field="csr",
                     code="csr_malformed") from None
    if rest:
        raise BadCSR("the CSR has trailing bytes after its DER encoding", field="csr",
                     code="csr_malformed")
    try:
        canonical = der_encoder.encode(asn1) == der
    except Exception:
        canonical = False
    if not canonical or isinstance(exc, _NotDER):
        reason = str(exc) if isinstance(exc, _NotDER) and str(exc) else "non-canonical BER"
        raise BadCSR(f"the CSR is not DER-encoded ({reason})", field="csr",
                     code="csr_not_der")
    raise BadCSR("the CSR could not be parsed (unsupported key or malformed fields)",
                 field="csr", code="csr_malformed")


def _tlv(buf: bytes, pos: int, limit: int) -> tuple[int, int, int]:
    """(tag octet, start of contents, end of contents) of the TLV at pos."""
    if limit - pos < 2:
        raise _Malformed()
    tag = buf[pos]
    if tag & 0x1F == 0x1F:  # high tag numbers: nothing in a CSR uses them
        raise _Malformed()
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise _NotDER("indefinite length")
    else:
        n = first & 0x7F
        if n > 4 or pos + n > limit:
            raise _Malformed()
        length = int.from_bytes(buf[pos:pos + n], "big")
        if length < 0x80 or buf[pos] == 0:
            raise _NotDER("length not in the fewest octets")
        pos += n
    if pos + length > limit:
        raise _Malformed()
    return tag, pos, pos + length


_ROOT, _INFO, _IN_INFO, _OTHER = range(4)  # where a TLV is in the CertificationRequest


def _walk(buf: bytes, pos: int, limit: int, depth: int, role: int) -> int:
    """Check the TLV at pos and everything nested in it; returns the end of the TLV. role: the
    CertificationRequest itself, its CertificationRequestInfo, a direct child of that (where
    [0] IMPLICIT is the SET OF attributes), or anything else."""
    if depth > 32:
        raise _Malformed()
    tag, start, end = _tlv(buf, pos, limit)
    constructed = tag & 0x20
    if tag & 0xC0 == 0:  # universal class
        number = tag & 0x1F
        if constructed and tag not in _STRUCTURED:
            raise _NotDER("a constructed string or scalar")
        if not constructed and number in (16, 17):
            raise _Malformed()
        if number in (2, 10):  # INTEGER, ENUMERATED
            if start == end:
                raise _Malformed()
            if end - start > 1 and ((buf[start] == 0 and buf[start + 1] < 0x80) or
                                    (buf[start] == 0xFF and buf[start + 1] >= 0x80)):
                raise _NotDER("an INTEGER not in the fewest octets")
        elif number == 1:  # BOOLEAN
            if end - start != 1:
                raise _Malformed()
            if buf[start] not in (0x00, 0xFF):
                raise _NotDER("a BOOLEAN that is neither 00 nor FF")
        elif number == 3:  # BIT STRING
            if start == end or buf[start] > 7 or (end - start == 1 and buf[start]):
                raise _Malformed()
            unused = buf[start]
            if unused and buf[end - 1] & ((1 << unused) - 1):
                raise _NotDER("a BIT STRING with non-zero padding bits")
        elif number == 5 and end != start:  # NULL
            raise _Malformed()
    if constructed:
        child = start
        ends: list[tuple[int, int]] = []
        index = 0
        while child < end:
            if role == _ROOT:  # its first child is the CertificationRequestInfo
                child_role = _INFO if index == 0 else _OTHER
            else:
                child_role = _IN_INFO if role == _INFO else _OTHER
            child_end = _walk(buf, child, end, depth + 1, role=child_role)
            ends.append((child, child_end))
            child = child_end
            index += 1
        if tag == 0x31 or (tag == 0xA0 and role == _IN_INFO):  # SET OF: ascending order (X.690 11.6)
            prev = None
            for a, b in ends:
                item = buf[a:b]
                if prev is not None and item < prev:
                    raise _NotDER("SET OF elements not in ascending order")
                prev = item
    return end


def csr_to_pem(der: bytes) -> str:
    """The PEM form the RA stores (64-character lines, LF)."""
    b64 = base64.b64encode(der).decode("ascii")
    return ("-----BEGIN CERTIFICATE REQUEST-----\n"
            + "\n".join(b64[k:k + 64] for k in range(0, len(b64), 64))
            + "\n-----END CERTIFICATE REQUEST-----\n")


# parse_csr is a pure function of its input, and a request's CSR is parsed twice: when the
# request is made (the RA refuses a bad CSR at once) and when it is issued (the CA reads the
# PEM the RA stored, with parse_stored_csr). The last _MEMO_MAX successful parses of
# ordinary-sized inputs are kept per process, under the input and under the stored PEM form, so
# the second parse is free when both happen in one process (issue 8). Refusals are not kept.
_MEMO_MAX = 2048
_MEMO_INPUT_MAX = 8192  # bytes or characters: at most 16 MiB kept
_memo: dict[bytes | str, ParsedCSR] = {}
_memo_lock = threading.Lock()


def parse_csr(data: bytes | str) -> ParsedCSR:
    """PEM or DER -> ParsedCSR. Refuses non-DER encodings, bad signatures, weak hashes and
    control characters in the subject. Key policy is checked separately (`check_csr_key`)."""
    if not _memoisable(data):
        return _parse_csr(data)  # not kept (or refused there, with the usual message)
    parsed = _memo.get(data)
    if parsed is None:
        parsed = _parse_csr(data)
        with _memo_lock:
            while len(_memo) >= _MEMO_MAX:
                del _memo[next(iter(_memo))]
            _memo[data] = _memo[csr_to_pem(parsed.der)] = parsed
    return parsed


def parse_stored_csr(data: bytes | str) -> ParsedCSR:
    """A CSR the RA stored after parse_csr accepted it (ca.ra.requests.prepare is the only
    writer of RaRequest.csr_pem): every check of parse_csr again except the signature, the
    proof of possession already verified when the request was made. Re-verifying at issuance
    would cost an ECDSA/RSA verification per certificate (on another worker than the one that
    made the request, the memo above misses) and proves nothing more: whoever could swap a
    stored CSR could sign the swapped one too. Memo hits are served as by parse_csr; a parse
    made here is not kept, so parse_csr never returns an unverified result."""
    parsed = _memo.get(data) if _memoisable(data) else None
    return parsed if parsed is not None else _parse_csr(data, check_signature=False)


def _memoisable(data) -> bool:
    return isinstance(data, (bytes, str)) and len(data) <= _MEMO_INPUT_MAX


def _parse_csr(data: bytes | str, check_signature: bool = True) -> ParsedCSR:
    der = _to_der(data)
    _check_der(der)
    try:
        csr = x509.load_der_x509_csr(der)
        public_key = csr.public_key()
    except (ValueError, TypeError):
        _refuse(der, _Malformed())  # garbage: "not a PKCS#10"; else "could not be parsed"
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
        valid = csr.is_signature_valid if check_signature else True
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
