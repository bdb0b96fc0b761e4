"""The OCSP responder: delegated responder in the HSM, good/revoked/unknown, nonce, several
certIDs, pre-signed answers without the HSM, and every kind of bad input."""
from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from sqlalchemy import select

from ca import revocation
from ca.store.models import Certificate
from ca.store.models_crl import OcspResponse
from crl import der, ocsp_codec
from tests.crl.helpers import ca_cert, issue, lint, ocsp_request, ocsp_service, responders


def _setup(services):
    responders(services).ensure("issuing")
    return ocsp_service(services), ca_cert(services.db, "issuing")


def test_responder_certificate_is_delegated_and_in_the_hsm(services, clock):
    row, created = responders(services).ensure("issuing")
    assert created
    again, created2 = responders(services).ensure("issuing")
    assert not created2 and again.id == row.id
    cert = x509.load_der_x509_certificate(row.certificate_der)
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING])
    assert cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert cert.issuer == ca_cert(services.db, "issuing").subject
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=7)
    # GovCA's default responder key: RSA-2048 (RFC 6960 4.3: the algorithm every client SHALL
    # process; docs/performance.md)
    assert isinstance(cert.public_key(), rsa.RSAPublicKey) and cert.public_key().key_size == 2048
    attrs = services.keys.attributes(bytes.fromhex(row.key_id))
    assert attrs["sensitive"] and not attrs["extractable"]
    # renewed automatically when it nears expiry
    clock.advance(days=5, hours=12)
    renewed, created3 = responders(services).ensure("issuing")
    assert created3 and renewed.id != row.id and renewed.not_after > row.not_after


def test_responder_key_type_is_configurable(monkeypatch):
    from ca.keys import KeySpec
    from crl.responder import default_key_spec
    monkeypatch.delenv("GOVCA_OCSP_RESPONDER_KEY", raising=False)
    assert default_key_spec() == KeySpec("rsa", "2048")
    monkeypatch.setenv("GOVCA_OCSP_RESPONDER_KEY", "p256")
    assert default_key_spec() == KeySpec("ec", "secp256r1")
    monkeypatch.setenv("GOVCA_OCSP_RESPONDER_KEY", "rsa1024")
    with pytest.raises(ValueError, match="GOVCA_OCSP_RESPONDER_KEY"):
        default_key_spec()


@pytest.mark.parametrize("responder_key", ["rsa2048", "p256"])
def test_good_revoked_unknown(services, clock, tmp_path, monkeypatch, responder_key):
    monkeypatch.setenv("GOVCA_OCSP_RESPONDER_KEY", responder_key)
    svc, issuer = _setup(services)
    good, bad = issue(services), issue(services, "staff.hanoi.2")
    revocation.revoke(services.db, clock, serial=bad.serial, reason="keyCompromise", actor="t")
    for row, expected in ((good, ocsp.OCSPCertStatus.GOOD), (bad, ocsp.OCSPCertStatus.REVOKED)):
        result = svc.answer(ocsp_request(row.der, issuer))
        resp = ocsp.load_der_ocsp_response(result.der)
        assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert resp.certificate_status == expected
        assert resp.serial_number == int(row.serial, 16)
        responder = resp.certificates[0]
        if responder_key == "p256":
            assert isinstance(responder.public_key(), ec.EllipticCurvePublicKey)
            responder.public_key().verify(resp.signature, resp.tbs_response_bytes,
                                          ec.ECDSA(hashes.SHA256()))
        else:
            assert isinstance(responder.public_key(), rsa.RSAPublicKey)
            assert resp.signature_algorithm_oid == \
                x509.oid.SignatureAlgorithmOID.RSA_WITH_SHA256
            responder.public_key().verify(resp.signature, resp.tbs_response_bytes,
                                          padding.PKCS1v15(), hashes.SHA256())
        assert resp.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
            responder.public_key()).digest
        assert resp.next_update_utc - resp.this_update_utc == dt.timedelta(hours=24)
        if expected == ocsp.OCSPCertStatus.REVOKED:
            assert resp.revocation_reason == x509.ReasonFlags.key_compromise
            assert resp.revocation_time_utc == clock.now().replace(microsecond=0)
        (tmp_path / "r.der").write_bytes(result.der)
        out = lint("ocsp", tmp_path / "r.der")
        assert out.returncode == 0, out.stdout + out.stderr
    # a serial never issued, and a reserved one, are never "good"
    parsed = ocsp.load_der_ocsp_request(ocsp_request(good.der, issuer))
    nh, kh = parsed.issuer_name_hash, parsed.issuer_key_hash
    with services.db.transaction() as s:
        src = s.get(Certificate, good.id)
        s.add(Certificate(ca_id=src.ca_id, serial="7" * 30, state="reserved", profile="personal",
                          subject=src.subject, not_before=src.not_before,
                          not_after=src.not_after, spki_sha256="0" * 64, tbs_sha256="0" * 64,
                          reserved_at=src.reserved_at))
    for serial in (12345678901234567, int("7" * 30, 16)):
        body = request_der([ocsp_codec.cert_id_der("sha1", nh, kh, serial)])
        resp = ocsp.load_der_ocsp_response(svc.answer(body).der)
        assert resp.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def request_der(cert_ids: list[bytes], nonce_value: bytes | None = None) -> bytes:
    """An OCSPRequest with any number of certIDs and a raw nonce extnValue."""
    tbs = [der.seq(*(der.seq(c) for c in cert_ids))]
    if nonce_value is not None:
        tbs.append(der.explicit(2, der.seq(der.seq(ocsp_codec.OID_NONCE,
                                                   der.octet_string(nonce_value)))))
    return der.seq(der.seq(*tbs))


def test_nonce_is_echoed_and_rfc8954_limits_apply(services):
    svc, issuer = _setup(services)
    row = issue(services)
    nonce = b"\x01" * 32
    result = svc.answer(ocsp_request(row.der, issuer, nonce=nonce))
    resp = ocsp.load_der_ocsp_response(result.der)
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert not result.cacheable
    cid = ocsp.load_der_ocsp_request(ocsp_request(row.der, issuer))
    cert_id = ocsp_codec.cert_id_der("sha1", cid.issuer_name_hash, cid.issuer_key_hash,
                                     cid.serial_number)
    ok = svc.answer(request_der([cert_id], der.octet_string(b"\x05")))
    assert ocsp.load_der_ocsp_response(ok.der).extensions.get_extension_for_class(
        x509.OCSPNonce).value.nonce == b"\x05"
    # RFC 8954 2.1: a nonce of 0 or more than 32 octets is a malformedRequest
    for bad in (der.octet_string(b""), der.octet_string(b"\x02" * 33), b"\x05"):
        result = svc.answer(request_der([cert_id], bad))
        assert ocsp.load_der_ocsp_response(result.der).response_status == \
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_several_cert_ids_and_an_upper_bound(services):
    svc, issuer = _setup(services)
    rows = [issue(services, f"staff.hanoi.{i}") for i in (1, 2, 3)]
    revocation.revoke(services.db, services.clock, serial=rows[1].serial, reason="superseded",
                      actor="t")
    cert_ids = [ocsp_codec.cert_id_der("sha1", *svc._sha1[_ca_id(svc)], int(r.serial, 16))
                for r in rows] if _warm(svc, issuer, rows[0]) else []
    body = request_der(cert_ids)
    result = svc.answer(body)
    assert result.status == 0
    statuses = _single_statuses(result.der)
    assert statuses == [0x80, 0xA1, 0x80]
    many = request_der([cert_ids[0]] * 2000)
    assert svc.answer(many).status == ocsp_codec.MALFORMED_REQUEST


def _warm(svc, issuer, row) -> bool:
    svc.answer(ocsp_request(row.der, issuer))
    return True


def _ca_id(svc) -> int:
    return next(i for i, n in svc._names.items() if n == "issuing")


def _single_statuses(response: bytes) -> list[int]:
    """The certStatus tag of each SingleResponse, read with our DER reader from the outside."""
    cs, ce = der.expect(response, 0, len(response), 0x30)
    items = der.children(response, cs, ce)
    rb = der.children(response, items[1][2], items[1][3])[0]
    parts = der.children(response, rb[2], rb[3])
    basic = response[parts[1][2]:parts[1][3]]
    bcs, bce = der.expect(basic, 0, len(basic), 0x30)
    tbs = der.children(basic, bcs, bce)[0]
    fields = der.children(basic, tbs[2], tbs[3])
    singles = der.children(basic, fields[2][2], fields[2][3])
    return [basic[der.children(basic, s[2], s[3])[1][1]] for s in singles]


def test_presigned_answers_need_no_hsm_and_revocation_invalidates_them(services, clock):
    svc, issuer = _setup(services)
    rows = [issue(services, f"staff.quangninh.{i}") for i in (1, 2)]
    assert svc.presign() >= 2
    assert svc.presign() == 0  # nothing due
    body = ocsp_request(rows[0].der, issuer)

    class NoHsm:
        def load(self, *a, **k):
            raise AssertionError("the HSM was used for a pre-signed answer")
    reader = ocsp_service(services)
    reader.keys = NoHsm()
    first = reader.answer(body)
    assert ocsp.load_der_ocsp_response(first.der).certificate_status == ocsp.OCSPCertStatus.GOOD
    assert reader.answer(body).der == first.der and first.cacheable
    # revocation deletes the pre-signed row in its own transaction ...
    revocation.revoke(services.db, clock, serial=rows[0].serial, reason="keyCompromise",
                      actor="t")
    with services.db.transaction() as s:
        assert s.execute(select(OcspResponse).where(
            OcspResponse.serial == rows[0].serial)).first() is None
    # ... and the next read after the in-process TTL signs the new status
    fresh = ocsp_service(services, cache_ttl=0)
    resp = ocsp.load_der_ocsp_response(fresh.answer(body).der)
    assert resp.certificate_status == ocsp.OCSPCertStatus.REVOKED
    # answers are refreshed before they go stale
    clock.advance(hours=9)
    assert svc.presign() >= 1


def test_bad_input_gets_an_ocsp_error_and_changes_nothing(services):
    svc, issuer = _setup(services)
    row = issue(services)
    with services.db.transaction() as s:
        before = s.execute(select(OcspResponse.id)).all()
    for body in (b"", b"garbage", b"\x30\x80\x00\x00", b"\x30\x03\x02\x01",
                 b"\x30" + b"\xff" * 10, der.seq(der.seq(der.seq()))):
        assert svc.answer(body).status == ocsp_codec.MALFORMED_REQUEST, body
    # unknown hash algorithm, and an issuer we do not serve
    req = ocsp_request(row.der, issuer, algorithm=hashes.SHA256())
    assert svc.answer(req).status == 0
    cid = ocsp.load_der_ocsp_request(ocsp_request(row.der, issuer))
    md5 = der.seq(der.seq(der.oid("1.2.840.113549.2.5"), b"\x05\x00"),
                  der.octet_string(cid.issuer_name_hash), der.octet_string(cid.issuer_key_hash),
                  der.integer(cid.serial_number))
    assert svc.answer(request_der([md5])).status == ocsp_codec.UNAUTHORIZED
    other = request_der([ocsp_codec.cert_id_der("sha1", b"\x00" * 20, b"\x11" * 20, 5)])
    assert svc.answer(other).status == ocsp_codec.UNAUTHORIZED
    with services.db.transaction() as s:
        assert s.execute(select(OcspResponse.id)).all() == before


def test_a_ca_without_responder_answers_try_later(services):
    svc = ocsp_service(services)
    issuer = ca_cert(services.db, "issuing")
    row = issue(services)
    for _ in range(2):  # twice: the first answer must not poison the cache
        assert svc.answer(ocsp_request(row.der, issuer)).status == ocsp_codec.TRY_LATER
    assert svc.answer(ocsp_request(row.der, issuer, nonce=b"x" * 16)).status == \
        ocsp_codec.TRY_LATER
