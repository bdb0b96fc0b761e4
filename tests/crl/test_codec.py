"""The DER reader/writer and the OCSP request parser: strict, and never anything but
MalformedRequest for bad bytes (a bounded mutation fuzz)."""
from __future__ import annotations

import datetime as dt
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from crl import der, ocsp_codec
from crl.ocsp_codec import MalformedRequest, parse_request


def _request(n=1, nonce=None) -> bytes:
    b = ocsp.OCSPRequestBuilder().add_certificate_by_hash(b"\x01" * 20, b"\x02" * 20, 0x1234,
                                                         hashes.SHA1())
    if nonce:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


def test_parses_what_cryptography_writes():
    req = parse_request(_request(nonce=b"\x09" * 16), 16)
    assert len(req.cert_ids) == 1
    cid = req.cert_ids[0]
    assert (cid.hash_name, cid.name_hash, cid.key_hash, cid.serial) == \
        ("sha1", b"\x01" * 20, b"\x02" * 20, 0x1234)
    assert req.nonce == der.octet_string(b"\x09" * 16)
    assert cid.raw == ocsp_codec.cert_id_der("sha1", b"\x01" * 20, b"\x02" * 20, 0x1234)


def test_der_writer_matches_known_encodings():
    assert der.oid("1.3.6.1.5.5.7.48.1.1") == bytes.fromhex("06092b0601050507300101")
    assert der.integer(0x80) == b"\x02\x02\x00\x80"
    assert der.integer(1) == b"\x02\x01\x01"
    assert der.tlv(0x04, b"a" * 200)[:3] == b"\x04\x81\xc8"
    assert der.generalized_time(dt.datetime(2026, 6, 1, 8, 0, tzinfo=dt.timezone.utc)) == \
        b"\x18\x0f20260601080000Z"


@pytest.mark.parametrize("data", [
    b"", b"\x30", b"\x30\x80" + _request()[2:],  # indefinite length (BER, not DER)
    b"\x30\x81\x05\x30\x03\x30\x01\x00",  # non-minimal length
    _request() + b"\x00",  # trailing data
    der.seq(der.seq(der.explicit(0, der.integer(1)), der.seq(der.seq(
        ocsp_codec.cert_id_der("sha1", b"a", b"b", 1))))),  # version v2
    der.seq(der.seq(der.seq(der.seq(ocsp_codec.cert_id_der("sha1", b"a", b"b", 1))),
                    der.explicit(2, der.seq(der.seq(der.oid("1.2.3.4"), b"\x01\x01\xff",
                                                    der.octet_string(b"x")))))),  # critical ext
    der.seq(der.seq(der.seq())),  # no certID
])
def test_strictness(data):
    with pytest.raises(MalformedRequest):
        parse_request(data, 16)


def test_signed_requests_and_non_critical_extensions_are_accepted():
    tbs = der.seq(der.explicit(1, der.tlv(0xA4, der.seq())),  # requestorName
                  der.seq(der.seq(ocsp_codec.cert_id_der("sha256", b"a" * 32, b"b" * 32, 7))),
                  der.explicit(2, der.seq(der.seq(der.oid("1.2.3.4"), der.octet_string(b"x")))))
    signed = der.seq(tbs, der.explicit(0, der.seq(der.seq(der.oid("1.2.840.10045.4.3.2")),
                                                  der.bit_string(b"sig"))))
    req = parse_request(signed, 16)
    assert req.cert_ids[0].hash_name == "sha256" and req.nonce is None


def test_mutated_requests_only_ever_raise_malformed():
    rng = random.Random(3)
    base = _request(nonce=b"\x05" * 32)
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(data))
            if op < 0.5:
                data[pos] = rng.randrange(256)
            elif op < 0.75:
                del data[pos]
            else:
                data.insert(pos, rng.randrange(256))
        try:
            parse_request(bytes(data), 16)
        except MalformedRequest:
            pass
