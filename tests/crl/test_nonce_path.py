"""The lean nonce path: requests of a known shape are not parsed again (crl/ocsp.py
_known_shape), the HTTP head of a request is parsed once (crl/gunicorn_worker.py parse_fast),
and the responder signs in a PKCS#11 session per thread. Each answer must still be exactly the
answer to its own request: its own nonce echoed (RFC 8954), its own certificate's status,
signed by the responder."""
from __future__ import annotations

import datetime as dt
import os
import random

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography import x509
from cryptography.x509 import ocsp

from ca import revocation
from crl import der, ocsp_codec
from crl.gunicorn_worker import _heads, parse_fast
from tests.crl.helpers import ca_cert, issue, ocsp_request, ocsp_service, responders


def _setup(services):
    responders(services).ensure("issuing")
    return ocsp_service(services), ca_cert(services.db, "issuing")


def _check(result, nonce: bytes, serial: int, status) -> None:
    resp = ocsp.load_der_ocsp_response(result.der)
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert resp.serial_number == serial
    assert resp.certificate_status == status
    pub = resp.certificates[0].public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        pub.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    else:
        pub.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256())


def test_same_shape_other_nonce_and_other_certificate(services):
    svc, issuer = _setup(services)
    good, bad = issue(services, "staff.hanoi.1"), issue(services, "staff.hanoi.2")
    revocation.revoke(services.db, services.clock, serial=bad.serial, reason="keyCompromise",
                      actor="t")
    first = os.urandom(32)
    _check(svc.answer(ocsp_request(good.der, issuer, nonce=first)), first,
           int(good.serial, 16), ocsp.OCSPCertStatus.GOOD)
    assert svc._shaped, "the shape of the first request is kept"
    for _ in range(5):  # same shape: not parsed again, yet each nonce is its own
        n = os.urandom(32)
        _check(svc.answer(ocsp_request(good.der, issuer, nonce=n)), n, int(good.serial, 16),
               ocsp.OCSPCertStatus.GOOD)
    # Same length and shape, another serial (outside the nonce): that certificate's status.
    n = os.urandom(32)
    _check(svc.answer(ocsp_request(bad.der, issuer, nonce=n)), n, int(bad.serial, 16),
           ocsp.OCSPCertStatus.REVOKED)
    # Other nonce lengths: their own shapes, still echoed exactly.
    for size in (1, 8, 16, 31):
        n = os.urandom(size)
        _check(svc.answer(ocsp_request(good.der, issuer, nonce=n)), n, int(good.serial, 16),
               ocsp.OCSPCertStatus.GOOD)


def test_a_bad_nonce_in_a_known_shape_is_still_malformed(services):
    svc, issuer = _setup(services)
    row = issue(services)
    req = ocsp.load_der_ocsp_request(ocsp_request(row.der, issuer))
    cert_id = ocsp_codec.cert_id_der("sha1", req.issuer_name_hash, req.issuer_key_hash,
                                     req.serial_number)

    def body(nonce_value: bytes) -> bytes:
        return der.seq(der.seq(der.seq(der.seq(cert_id)), der.explicit(2, der.seq(der.seq(
            ocsp_codec.OID_NONCE, der.octet_string(nonce_value))))))
    ok = svc.answer(body(der.octet_string(b"\x07" * 32)))
    assert ok.status == ocsp_codec.SUCCESSFUL
    # 33 octets (RFC 8954 2.1 limit is 32) or not an OCTET STRING: malformed, every time.
    for bad in (der.octet_string(b"\x07" * 33), b"\x05\x00", b"\x04\x21" + b"\x07" * 32):
        for _ in range(2):
            assert svc.answer(body(bad)).status == ocsp_codec.MALFORMED_REQUEST


def test_known_shape_parses_exactly_like_the_parser(services):
    """Property: for random variations of requests (nonce value and length, serial, hash,
    several certIDs), the shape cache gives what parse_request gives."""
    svc, issuer = _setup(services)
    rows = [issue(services, f"staff.hanoi.{i}") for i in (1, 2)]
    rng = random.Random(5)
    bodies = []
    for _ in range(300):
        row = rng.choice(rows)
        algo = rng.choice([hashes.SHA1(), hashes.SHA256()])
        nonce = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 16, 32])))
        bodies.append(ocsp_request(row.der, issuer, nonce=nonce, algorithm=algo))
    for body in bodies:
        expected = ocsp_codec.parse_request(body, 16)
        svc.answer(body)
        got = svc._known_shape(body)
        assert got is not None
        assert got.cert_ids == expected.cert_ids and got.nonce == expected.nonce
    # Equal outside the nonce's octets, same length: only then a hit.
    body = bodies[0]
    span = ocsp_codec.parse_request(body, 16).nonce_span
    flipped = bytearray(body)
    flipped[span[1] - 3] ^= 0x01  # an octet before the nonce (its length or the OID)
    assert svc._known_shape(bytes(flipped)) is None


def test_parse_fast_head_cache_keeps_verdicts_per_head():
    head = (b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\n"
            b"Content-Length: 5\r\n\r\n")
    environ, close = parse_fast(head + b"abcde")
    assert environ["wsgi.input"].read() == b"abcde" and not close
    assert head[:-4] in _heads
    environ2, _ = parse_fast(head + b"vwxyz")
    assert environ2["wsgi.input"].read() == b"vwxyz"
    assert environ2 is not environ and environ2["REQUEST_METHOD"] == "POST"
    # Same head, a body of another length: partial or pipelined -> gunicorn's parser.
    assert parse_fast(head + b"abc") is None
    assert parse_fast(head + b"abcdefg") is None
    # A head that is not for the fast path stays refused, from the cache too.
    odd = b"POST /ocsp HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    for _ in range(2):
        assert parse_fast(odd + b"5\r\nabcde\r\n0\r\n\r\n") is None
    assert _heads[odd[:-4]] is False


def _tbs(result) -> bytes:
    return ocsp.load_der_ocsp_response(result.der).tbs_response_bytes


def test_shape_state_gives_the_general_paths_answer(services, clock):
    """A request of a known shape is answered from the shape's state (ResponseData up to the
    nonce, kept for one second): byte for byte the ResponseData sign_now() builds for it."""
    svc, issuer = _setup(services)
    good, bad = issue(services, "staff.hanoi.1"), issue(services, "staff.hanoi.2")
    revocation.revoke(services.db, services.clock, serial=bad.serial, reason="keyCompromise",
                      actor="t")
    for row in (good, bad):
        svc.answer(ocsp_request(row.der, issuer, nonce=os.urandom(32)))  # the shape is known
        for size in (32, 16, 1):
            n = os.urandom(size)
            body = ocsp_request(row.der, issuer, nonce=n)
            req = svc._known_shape(body) or ocsp_codec.parse_request(body, 16)
            got = svc.answer(body)
            assert got.status == ocsp_codec.SUCCESSFUL and not got.cacheable
            ca_id = svc.issuer_of(req.cert_ids[0])
            assert _tbs(got) == _tbs(svc.sign_now(ca_id, req.cert_ids, req.nonce))
            assert got.this_update == clock.now().replace(microsecond=0)
    assert all(s.state is not None for s in svc._shaped.values())


def test_shape_state_follows_the_clock_and_revocations(services, clock):
    """The shared part of a shape's answers is rebuilt when the second changes and when the
    statuses are older than cache_ttl: a revocation shows as soon as the status is read again,
    exactly as on the general path."""
    svc, issuer = _setup(services)
    row = issue(services)
    svc = ocsp_service(services, cache_ttl=0.0)  # every answer reads the status again
    responders(services).ensure("issuing")

    def ask():
        n = os.urandom(32)
        result = svc.answer(ocsp_request(row.der, issuer, nonce=n))
        _check(result, n, int(row.serial, 16), _status_of(result))
        return ocsp.load_der_ocsp_response(result.der)

    first = ask()
    assert first.certificate_status == ocsp.OCSPCertStatus.GOOD
    clock.advance(seconds=3)
    later = ask()
    assert later.produced_at_utc == first.produced_at_utc + dt.timedelta(seconds=3)
    assert later.this_update_utc == later.produced_at_utc
    revocation.revoke(services.db, services.clock, serial=row.serial, reason="superseded",
                      actor="t")
    revoked = ask()
    assert revoked.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason == x509.ReasonFlags.superseded
    # forget() (a responder renewal) drops the shapes and their states.
    svc.forget()
    assert not svc._shaped and not svc._shapes
    assert ask().certificate_status == ocsp.OCSPCertStatus.REVOKED


def test_shape_state_keeps_statuses_for_cache_ttl_only(services, clock, monkeypatch):
    """Within cache_ttl a shape's state is reused (no status read); past it, read again."""
    svc, issuer = _setup(services)
    row = issue(services)
    t = [1000.0]
    monkeypatch.setattr("crl.ocsp.time.monotonic", lambda: t[0])
    reads = []
    real = svc.reader.statuses
    monkeypatch.setattr(svc.reader, "statuses", lambda *a, **k: reads.append(a) or real(*a, **k))
    for _ in range(3):
        svc.answer(ocsp_request(row.der, issuer, nonce=os.urandom(32)))
    assert len(reads) == 1
    t[0] += svc.settings.cache_ttl + 0.01
    svc.answer(ocsp_request(row.der, issuer, nonce=os.urandom(32)))
    assert len(reads) == 2


def _status_of(result):
    return ocsp.load_der_ocsp_response(result.der).certificate_status
