"""OCSP messages (RFC 6960 4.1, 4.2): strict request parsing and response encoding in DER.

cryptography's OCSP classes handle one certID per request and response; RFC 6960 allows several,
so GovCA reads and writes these few structures itself (crl/der.py) and checks them with
cryptography, openssl and pkilint in the tests."""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from crl import der
from crl.der import DERError

OID_NONCE = der.oid("1.3.6.1.5.5.7.48.1.2")  # RFC 6960 4.4.1 / RFC 8954
OID_BASIC = der.oid("1.3.6.1.5.5.7.48.1.1")  # id-pkix-ocsp-basic
HASH_OIDS = {  # CertID hashAlgorithm (DER of the OID) -> hashlib name
    der.oid("1.3.14.3.2.26"): "sha1",
    der.oid("2.16.840.1.101.3.4.2.1"): "sha256",
    der.oid("2.16.840.1.101.3.4.2.2"): "sha384",
    der.oid("2.16.840.1.101.3.4.2.3"): "sha512",
}
HASH_OID_BY_NAME = {v: k for k, v in HASH_OIDS.items()}
# RFC 6960 4.2.1 OCSPResponseStatus
SUCCESSFUL, MALFORMED_REQUEST, INTERNAL_ERROR, TRY_LATER, SIG_REQUIRED, UNAUTHORIZED = 0, 1, 2, 3, 5, 6
# RFC 5280 5.3.1 CRLReason values
CRL_REASON_CODES = {"unspecified": 0, "keyCompromise": 1, "cACompromise": 2,
                    "affiliationChanged": 3, "superseded": 4, "cessationOfOperation": 5,
                    "certificateHold": 6, "privilegeWithdrawn": 9, "aACompromise": 10}
MAX_NONCE = 32  # RFC 8954 2.1: Nonce ::= OCTET STRING (SIZE(1..32))


class MalformedRequest(ValueError):
    """Answer with malformedRequest (RFC 6960 4.2.1)."""


@dataclass(frozen=True)
class CertId:
    hash_name: str | None  # None: a hash algorithm we do not know
    name_hash: bytes
    key_hash: bytes
    serial: int
    raw: bytes  # the DER as received, echoed in the answer (RFC 6960 4.2.1)


@dataclass(frozen=True)
class OcspRequest:
    cert_ids: tuple[CertId, ...]
    nonce: bytes | None = None  # the nonce extension's extnValue, echoed verbatim
    extensions: tuple[bytes, ...] = field(default_factory=tuple)
    # Where the nonce's octets are in the request: (start of the inner OCTET STRING, start and
    # end of its content). The parse depends on their number, never on their value, so another
    # request equal outside [content start, end) parses to the same request (crl/ocsp.py).
    nonce_span: tuple[int, int, int] | None = field(default=None, compare=False)


def _extensions(data: bytes, start: int, end: int) -> list[tuple[bytes, bool, bytes, int]]:
    """(extnID DER, critical, extnValue content, offset of that content in `data`)."""
    cs, ce = der.expect(data, start, end, der.TAG_SEQUENCE)
    out = []
    for tag, _es, ecs, ece in der.children(data, cs, ce):
        if tag != der.TAG_SEQUENCE:
            raise DERError("an extension is not a SEQUENCE")
        parts = der.children(data, ecs, ece)
        if len(parts) not in (2, 3) or parts[0][0] != der.TAG_OID or parts[-1][0] != der.TAG_OCTET_STRING:
            raise DERError("bad extension")
        critical = len(parts) == 3 and data[parts[1][2]:parts[1][3]] != b"\x00"
        oid = data[parts[0][1]:parts[0][3]]
        out.append((oid, critical, data[parts[-1][2]:parts[-1][3]], parts[-1][2]))
    return out


def parse_request(data: bytes, max_cert_ids: int) -> OcspRequest:
    """Parse an OCSPRequest; any deviation raises MalformedRequest."""
    try:
        return _parse(data, max_cert_ids)
    except (DERError, IndexError, ValueError) as exc:
        if isinstance(exc, MalformedRequest):
            raise
        raise MalformedRequest(str(exc)) from None


def _parse(data: bytes, max_cert_ids: int) -> OcspRequest:
    n = len(data)
    cs, ce = der.expect(data, 0, n, der.TAG_SEQUENCE)
    if ce != n:
        raise MalformedRequest("trailing data after the request")
    top = der.children(data, cs, ce)
    if not top or top[0][0] != der.TAG_SEQUENCE or len(top) > 2:
        raise MalformedRequest("not an OCSPRequest")
    if len(top) == 2 and top[1][0] != 0xA0:  # optionalSignature [0]
        raise MalformedRequest("unexpected element after tbsRequest")
    _, _, tcs, tce = top[0]
    items = der.children(data, tcs, tce)
    i = 0
    if i < len(items) and items[i][0] == 0xA0:  # version [0] EXPLICIT, v1 only
        vcs, vce = der.expect(data, items[i][2], items[i][3], der.TAG_INTEGER)
        if der.parse_integer(data[vcs:vce]) != 0:
            raise MalformedRequest("unsupported OCSP version")
        i += 1
    if i < len(items) and items[i][0] == 0xA1:  # requestorName, ignored
        i += 1
    if i >= len(items) or items[i][0] != der.TAG_SEQUENCE:
        raise MalformedRequest("no requestList")
    _, _, lcs, lce = items[i]
    i += 1
    requests = der.children(data, lcs, lce)
    if not requests:
        raise MalformedRequest("empty requestList")
    if len(requests) > max_cert_ids:
        raise MalformedRequest(f"more than {max_cert_ids} certificates in one request")
    cert_ids = tuple(_cert_id(data, r) for r in requests)
    nonce = span = None
    if i < len(items):
        if items[i][0] != 0xA2:
            raise MalformedRequest("unexpected element in tbsRequest")
        for oid, critical, value, at in _extensions(data, items[i][2], items[i][3]):
            if oid == OID_NONCE:
                vcs, vce = der.expect(value, 0, len(value), der.TAG_OCTET_STRING)
                if vce != len(value) or not 1 <= vce - vcs <= MAX_NONCE:
                    # RFC 8954 2.1: nonces of 0 or over 32 octets MUST be rejected.
                    raise MalformedRequest("nonce of a length outside 1..32 octets")
                nonce, span = value, (at, at + vcs, at + vce)
            elif critical:
                raise MalformedRequest("unsupported critical request extension")
        i += 1
    if i != len(items):
        raise MalformedRequest("unexpected trailing elements in tbsRequest")
    return OcspRequest(cert_ids=cert_ids, nonce=nonce, nonce_span=span)


def _cert_id(data: bytes, item) -> CertId:
    tag, es, cs, ce = item
    if tag != der.TAG_SEQUENCE:
        raise MalformedRequest("a Request is not a SEQUENCE")
    parts = der.children(data, cs, ce)
    if not parts or parts[0][0] != der.TAG_SEQUENCE or len(parts) > 2:
        raise MalformedRequest("bad Request")
    if len(parts) == 2 and parts[1][0] != 0xA0:
        raise MalformedRequest("bad singleRequestExtensions")
    _, ies, ics, ice = parts[0]
    f = der.children(data, ics, ice)
    if len(f) != 4 or [t for t, *_ in f] != [der.TAG_SEQUENCE, der.TAG_OCTET_STRING,
                                            der.TAG_OCTET_STRING, der.TAG_INTEGER]:
        raise MalformedRequest("bad CertID")
    alg = der.children(data, f[0][2], f[0][3])
    if not alg or alg[0][0] != der.TAG_OID or len(alg) > 2:
        raise MalformedRequest("bad hashAlgorithm")
    if len(alg) == 2 and data[alg[1][1]:alg[1][3]] != b"\x05\x00":
        raise MalformedRequest("hashAlgorithm parameters must be absent or NULL")
    hash_name = HASH_OIDS.get(data[alg[0][1]:alg[0][3]])
    name_hash = data[f[1][2]:f[1][3]]
    key_hash = data[f[2][2]:f[2][3]]
    serial_content = data[f[3][2]:f[3][3]]
    if len(serial_content) > 21:
        raise MalformedRequest("serial number over 20 octets")
    return CertId(hash_name=hash_name, name_hash=name_hash, key_hash=key_hash,
                  serial=der.parse_integer(serial_content), raw=data[ies:ice])


def cert_id_der(hash_name: str, name_hash: bytes, key_hash: bytes, serial: int) -> bytes:
    """A CertID as RFC 5019 2.1.1 clients send it (hash AlgorithmIdentifier with NULL)."""
    return der.seq(der.seq(HASH_OID_BY_NAME[hash_name], b"\x05\x00"), der.octet_string(name_hash),
                   der.octet_string(key_hash), der.integer(serial))


# --- responses -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SingleStatus:
    cert_id: bytes  # CertID DER
    status: str  # good | revoked | unknown
    this_update: dt.datetime
    next_update: dt.datetime
    revoked_at: dt.datetime | None = None
    reason: str | None = None


# Encoding is on the hot path of every signed answer (nonce, several certIDs, pre-signing): the
# few TLVs are written with one helper, and GeneralizedTime values (whole seconds, a handful of
# distinct values per second) are kept once formatted.
def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    if n < 0x100:
        return bytes((tag, 0x81, n)) + content
    if n < 0x10000:
        return bytes((tag, 0x82, n >> 8, n & 0xFF)) + content
    return der.tlv(tag, content)


def _head(tag: int, n: int) -> bytes:
    """The tag and length octets of a TLV whose content is `n` octets long."""
    if n < 0x80:
        return bytes((tag, n))
    if n < 0x100:
        return bytes((tag, 0x81, n))
    if n < 0x10000:
        return bytes((tag, 0x82, n >> 8, n & 0xFF))
    return der.tlv(tag, bytes(n))[:-n]


_UTC = dt.timezone.utc
_TIMES: dict[dt.datetime, bytes] = {}


def _time(value: dt.datetime) -> bytes:
    """GeneralizedTime YYYYMMDDHHMMSSZ (RFC 5280 4.1.2.5.2), formatted once per value."""
    out = _TIMES.get(value)
    if out is None:
        if len(_TIMES) >= 4096:
            _TIMES.clear()
        v = value.astimezone(_UTC)
        out = _TIMES[value] = bytes((der.TAG_GENERALIZED_TIME, 15)) + (
            f"{v.year:04d}{v.month:02d}{v.day:02d}{v.hour:02d}{v.minute:02d}{v.second:02d}Z"
            .encode("ascii"))
    return out


_GOOD, _UNKNOWN = b"\x80\x00", b"\x82\x00"  # good [0] / unknown [2] IMPLICIT NULL


def _single(s: SingleStatus) -> bytes:
    if s.status == "good":
        status = _GOOD
    elif s.status == "revoked":
        info = _time(s.revoked_at)
        code = CRL_REASON_CODES.get(s.reason or "")
        if code:  # RFC 5280 5.3.1: unspecified is omitted
            info += b"\xa0\x03\x0a\x01" + bytes((code,))  # [0] EXPLICIT ENUMERATED
        status = _tlv(0xA1, info)  # revoked [1] IMPLICIT RevokedInfo
    else:
        status = _UNKNOWN
    nxt = _time(s.next_update)
    return _tlv(der.TAG_SEQUENCE, b"".join((s.cert_id, status, _time(s.this_update),
                                            _tlv(0xA0, nxt))))


_RESPONDER_IDS: dict[bytes, bytes] = {}


def _nonce_extensions(nonce: bytes) -> bytes:
    """responseExtensions [1] with the nonce extension echoing `nonce` (the request's extnValue
    octets, RFC 8954: at most 34 here, an OCTET STRING of 1..32 octets)."""
    n = len(nonce)
    if n + 17 < 0x80:  # every length fits in one octet: written directly
        return bytes((0xA1, n + 17, der.TAG_SEQUENCE, n + 15, der.TAG_SEQUENCE, n + 13)) + \
            OID_NONCE + bytes((der.TAG_OCTET_STRING, n)) + nonce
    return _tlv(0xA1, _tlv(der.TAG_SEQUENCE, _tlv(der.TAG_SEQUENCE, OID_NONCE + _tlv(
        der.TAG_OCTET_STRING, nonce))))


def response_data(*, responder_key_hash: bytes, produced_at: dt.datetime,
                  singles: list[SingleStatus], nonce: bytes | None) -> bytes:
    """ResponseData (RFC 6960 4.2.1): version v1 (default, omitted), responderID byKey
    (RFC 5019 2.2.3), producedAt, responses and the echoed nonce."""
    rid = _RESPONDER_IDS.get(responder_key_hash)
    if rid is None:
        if len(_RESPONDER_IDS) >= 64:
            _RESPONDER_IDS.clear()
        rid = _RESPONDER_IDS[responder_key_hash] = _tlv(
            0xA2, _tlv(der.TAG_OCTET_STRING, responder_key_hash))
    responses = _tlv(der.TAG_SEQUENCE, _single(singles[0]) if len(singles) == 1 else
                     b"".join([_single(s) for s in singles]))
    if nonce is None:
        return _tlv(der.TAG_SEQUENCE, rid + _time(produced_at) + responses)
    return _tlv(der.TAG_SEQUENCE, b"".join((rid, _time(produced_at), responses,
                                           _nonce_extensions(nonce))))


def basic_response(tbs: bytes, signature_algorithm: bytes, signature: bytes,
                   responder_cert: bytes) -> bytes:
    """OCSPResponse wrapping a BasicOCSPResponse; the delegated responder's certificate rides in
    `certs` (RFC 6960 4.2.2.2)."""
    return ResponseTemplate(signature_algorithm, responder_cert).wrap(tbs, signature)


class ResponseTemplate:
    """The constant parts of one responder's answers (signature algorithm, `certs` with its
    certificate), encoded once; wrap() adds the signed ResponseData and the signature."""

    __slots__ = ("tail", "algorithm")

    def __init__(self, signature_algorithm: bytes, responder_cert: bytes) -> None:
        self.algorithm = signature_algorithm
        self.tail = _tlv(0xA0, _tlv(der.TAG_SEQUENCE, responder_cert))

    def wrap(self, tbs: bytes, signature: bytes) -> bytes:
        # The headers are computed from the lengths, the octets copied once (one join).
        sig_head = _head(der.TAG_BIT_STRING, len(signature) + 1)
        n = len(tbs) + len(self.algorithm) + len(sig_head) + 1 + len(signature) + len(self.tail)
        basic_head = _head(der.TAG_SEQUENCE, n)
        n += len(basic_head)
        octets_head = _head(der.TAG_OCTET_STRING, n)
        n += len(octets_head) + len(OID_BASIC)
        bytes_head = _head(der.TAG_SEQUENCE, n)
        n += len(bytes_head)
        explicit_head = _head(0xA0, n)
        n += len(explicit_head) + 3
        return b"".join((_head(der.TAG_SEQUENCE, n), b"\x0a\x01\x00",  # successful (0)
                         explicit_head, bytes_head, OID_BASIC, octets_head, basic_head, tbs,
                         self.algorithm, sig_head, b"\x00", signature, self.tail))


def error_response(status: int) -> bytes:
    """An unsigned OCSPResponse with only a status (RFC 6960 4.2.1)."""
    return der.seq(der.enumerated(status))


def key_hash(spki_der: bytes) -> bytes:
    return hashlib.sha1(der.spki_key_bits(spki_der)).digest()


MALFORMED = error_response(MALFORMED_REQUEST)
UNAUTHORIZED_RESPONSE = error_response(UNAUTHORIZED)
INTERNAL_ERROR_RESPONSE = error_response(INTERNAL_ERROR)
TRY_LATER_RESPONSE = error_response(TRY_LATER)
