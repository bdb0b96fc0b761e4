"""A minimal, strict DER reader and writer for the few OCSP structures GovCA handles itself."""
from __future__ import annotations

import datetime as dt

TAG_BOOLEAN, TAG_INTEGER, TAG_BIT_STRING, TAG_OCTET_STRING, TAG_NULL, TAG_OID = 1, 2, 3, 4, 5, 6
TAG_ENUMERATED, TAG_GENERALIZED_TIME, TAG_SEQUENCE = 0x0A, 0x18, 0x30
MAX_DEPTH_BYTES = 1 << 20


class DERError(ValueError):
    """The input is not the DER we expect."""


# --- reading -------------------------------------------------------------------------------
def read_tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content_start, content_end) of the element at `pos`; definite lengths only
    (X.690 10.1: DER forbids the indefinite form)."""
    if pos + 2 > end:
        raise DERError("truncated element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DERError("multi-byte tags are not used in OCSP")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:
            raise DERError("indefinite or oversized length")
        if pos + n > end:
            raise DERError("truncated length")
        length = int.from_bytes(data[pos:pos + n], "big")
        if length < 0x80 or data[pos] == 0:
            raise DERError("non-minimal length (not DER)")
        pos += n
    if pos + length > end:
        raise DERError("element longer than its container")
    return tag, pos, pos + length


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The elements inside [start, end): (tag, element_start, content_start, content_end)."""
    out = []
    pos = start
    while pos < end:
        tag, cs, ce = read_tlv(data, pos, end)
        out.append((tag, pos, cs, ce))
        pos = ce
    return out


def expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    t, cs, ce = read_tlv(data, pos, end)
    if t != tag:
        raise DERError(f"expected tag 0x{tag:02x}, found 0x{t:02x}")
    return cs, ce


def parse_integer(content: bytes) -> int:
    if not content:
        raise DERError("empty INTEGER")
    return int.from_bytes(content, "big", signed=True)


# --- writing -------------------------------------------------------------------------------
def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def seq(*parts: bytes) -> bytes:
    return tlv(TAG_SEQUENCE, b"".join(parts))


def octet_string(value: bytes) -> bytes:
    return tlv(TAG_OCTET_STRING, value)


def bit_string(value: bytes) -> bytes:
    return tlv(TAG_BIT_STRING, b"\x00" + value)


def integer(value: int) -> bytes:
    length = value.bit_length() // 8 + 1  # room for the sign bit
    return tlv(TAG_INTEGER, value.to_bytes(length, "big", signed=True))


def enumerated(value: int) -> bytes:
    return tlv(TAG_ENUMERATED, bytes([value]))


def explicit(number: int, content: bytes) -> bytes:
    return tlv(0xA0 | number, content)


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(TAG_OID, bytes(body))


def generalized_time(value: dt.datetime) -> bytes:
    # RFC 5280 4.1.2.5.2: YYYYMMDDHHMMSSZ, no fractional seconds.
    value = value.astimezone(dt.timezone.utc)
    return tlv(TAG_GENERALIZED_TIME, value.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


def spki_key_bits(spki_der: bytes) -> bytes:
    """The subjectPublicKey BIT STRING value (without the unused-bits octet) of an SPKI: what
    RFC 6960 4.1.1 (issuerKeyHash) and 4.2.1 (ResponderID byKey) hash."""
    cs, ce = expect(spki_der, 0, len(spki_der), TAG_SEQUENCE)
    items = children(spki_der, cs, ce)
    if len(items) != 2 or items[1][0] != TAG_BIT_STRING:
        raise DERError("not a SubjectPublicKeyInfo")
    _, _, bcs, bce = items[1]
    return spki_der[bcs + 1:bce]
