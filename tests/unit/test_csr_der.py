"""parse_csr's DER check (ca/csr.py _check_der): every way a CSR can be valid BER but not DER is
refused with csr_not_der, wherever it is nested; DER CSRs, including multi-valued RDNs and
several attributes, are accepted. Where pyasn1's DER codec (the check it replaced) sees the
field, the test also asserts that decoding and re-encoding with pyasn1 changes the bytes, i.e.
that the sample is really not DER."""
from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1_alt_modules import rfc2986

from ca.csr import parse_csr
from ca.errors import BadCSR
from tests import factories


# -- a tiny TLV tree: (tag, children | bytes) -------------------------------------------------
def parse(buf: bytes, pos: int = 0):
    tag, first = buf[pos], buf[pos + 1]
    pos += 2
    if first & 0x80:
        n = first & 0x7F
        length = int.from_bytes(buf[pos:pos + n], "big")
        pos += n
    else:
        length = first
    body = buf[pos:pos + length]
    if tag & 0x20:
        kids, p = [], 0
        while p < len(body):
            kid, p = parse(body, p)
            kids.append(kid)
        return [tag, kids], pos + length
    return [tag, body], pos + length


def length_octets(n: int, long_form: int = 0) -> bytes:
    if n < 0x80 and not long_form:
        return bytes([n])
    raw = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    raw = b"\x00" * max(0, long_form - len(raw)) + raw
    return bytes([0x80 | len(raw)]) + raw


def encode(node) -> bytes:
    tag, value = node[0], node[1]
    body = b"".join(encode(k) for k in value) if isinstance(value, list) else value
    return bytes([tag]) + length_octets(len(body), node[2] if len(node) > 2 else 0) + body


def tree(der: bytes):
    node, end = parse(der)
    assert end == len(der) and encode(node) == der  # the helpers round-trip DER
    return node


def csr_der(subject: x509.Name | None = None, attributes=()) -> bytes:
    key = factories.key("p256")
    b = x509.CertificateSigningRequestBuilder().subject_name(
        subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Nguyễn Văn A")]))
    for oid, value in attributes:
        b = b.add_attribute(oid, value)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def pyasn1_says_not_der(data: bytes) -> bool:
    try:
        asn1, rest = der_decoder.decode(data, asn1Spec=rfc2986.CertificationRequest())
        return bool(rest) or der_encoder.encode(asn1) != data
    except Exception:
        return True


def refused_as_not_der(data: bytes) -> None:
    with pytest.raises(BadCSR) as exc:
        parse_csr(data)
    assert exc.value.code == "csr_not_der", exc.value.message
    assert "\n" not in exc.value.message and ". " not in exc.value.message


# -- the cases ----------------------------------------------------------------------------------
def cn_value(t):
    """The CN value node: CSR > CRI > subject > RDN > AttributeTypeAndValue > value."""
    return t[1][0][1][1][1][0][1][0][1][1]


def test_a_der_csr_passes_and_round_trips():
    der = csr_der()
    assert parse_csr(der).der == der and not pyasn1_says_not_der(der)


def test_non_minimal_length_deep_inside_the_subject():
    t = tree(csr_der())
    cn_value(t).append(1)  # the CN's UTF8String length in long form
    # (pyasn1's check missed this one: AttributeValue is ANY, copied as is on re-encoding)
    refused_as_not_der(encode(t))


def test_length_with_a_leading_zero_octet():
    t = tree(csr_der())
    t[1][0].append(3)  # the CertificationRequestInfo's length in 3 octets, 00 first
    bad = encode(t)
    assert pyasn1_says_not_der(bad)
    refused_as_not_der(bad)


def test_indefinite_length():
    der = csr_der()
    t = tree(der)
    body = b"".join(encode(k) for k in t[1])
    refused_as_not_der(b"\x30\x80" + body + b"\x00\x00")


def test_non_minimal_integer_version():
    t = tree(csr_der())
    t[1][0][1][0][1] = b"\x00\x00"  # version INTEGER 0 in two octets
    bad = encode(t)
    assert pyasn1_says_not_der(bad)
    refused_as_not_der(bad)


def test_constructed_utf8string():
    t = tree(csr_der())
    node = cn_value(t)
    node[0], node[1] = 0x2C, [[0x0C, node[1][:3]], [0x0C, node[1][3:]]]
    refused_as_not_der(encode(t))


def test_bit_string_with_non_zero_padding_bits():
    t = tree(csr_der())
    sig = t[1][2]
    sig[1] = b"\x01" + sig[1][1:-1] + bytes([sig[1][-1] | 0x01])
    bad = encode(t)
    assert pyasn1_says_not_der(bad)
    refused_as_not_der(bad)


def test_boolean_true_must_be_ff():
    ext = x509.Extensions([x509.Extension(x509.oid.ExtensionOID.BASIC_CONSTRAINTS, True,
                                          x509.BasicConstraints(ca=False, path_length=None))])
    key = factories.key("p256")
    der = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])).add_extension(
        ext[0].value, critical=True).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.DER)
    assert parse_csr(der)
    i = der.index(b"\x01\x01\xff")  # the critical flag
    refused_as_not_der(der[:i] + b"\x01\x01\x01" + der[i + 3:])


def test_multi_valued_rdn_in_der_order_passes_and_out_of_order_is_refused():
    rdn = x509.RelativeDistinguishedName([
        x509.NameAttribute(NameOID.COMMON_NAME, "Trần Thị B"),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, "CCCD:001234567890")])
    der = csr_der(x509.Name([rdn]))
    assert parse_csr(der)  # cryptography writes the SET OF sorted
    t = tree(der)
    rdn_node = t[1][0][1][1][1][0]
    assert len(rdn_node[1]) == 2
    rdn_node[1].reverse()
    bad = encode(t)
    assert pyasn1_says_not_der(bad)  # pyasn1's DER encoder sorts the SET OF again
    refused_as_not_der(bad)


def test_attributes_set_out_of_order_is_refused():
    der = csr_der(attributes=[(x509.oid.AttributeOID.CHALLENGE_PASSWORD, b"abc"),
                              (x509.oid.AttributeOID.UNSTRUCTURED_NAME, b"zzz")])
    assert parse_csr(der)
    t = tree(der)
    attrs = t[1][0][1][3]
    assert attrs[0] == 0xA0 and len(attrs[1]) == 2
    attrs[1].reverse()
    bad = encode(t)
    assert pyasn1_says_not_der(bad)
    refused_as_not_der(bad)


def test_random_garbage_is_not_a_pkcs10_request():
    """Whatever the walk trips on first in random bytes, the answer is the one the previous
    check gave: not a PKCS#10 request (not "not DER", not "trailing bytes")."""
    import random
    rng = random.Random(8)
    for _ in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.choice((5, 40, 300))))
        if not data.strip():
            continue
        with pytest.raises(BadCSR) as exc:
            parse_csr(data)
        assert exc.value.code == "csr_malformed", (data.hex(), exc.value.message)
        assert "not a PKCS#10" in exc.value.message
