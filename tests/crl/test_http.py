"""The relying-party endpoints through the Flask app: CRL files with HTTP caching, OCSP POST and
GET with RFC 5019 headers, and bad input answered with 4xx or an OCSP error, never 500."""
from __future__ import annotations

import base64
import email.utils

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from sqlalchemy import func, select

from ca import revocation
from ca.store.models import AuditEvent
from ca.store.models_crl import OcspResponse, PublishedCRL
from tests.crl.helpers import ca_cert, issue, ocsp_request, publisher, responders


def test_crl_download_headers_conditional_get_and_head(client, services, clock):
    row = issue(services)
    revocation.revoke(services.db, clock, serial=row.serial, reason="superseded", actor="t")
    full, delta = publisher(services).publish_all("issuing")
    r = client.get("/pki/crl/issuing.crl")
    assert r.status_code == 200 and r.mimetype == "application/pkix-crl"
    assert r.data == full.der
    crl = x509.load_der_x509_crl(r.data)
    assert crl.get_revoked_certificate_by_serial_number(int(row.serial, 16)) is not None
    max_age = int(r.headers["Cache-Control"].split("max-age=")[1].split(",")[0])
    assert 0 < max_age <= (full.next_update - clock.now()).total_seconds()
    assert email.utils.parsedate_to_datetime(r.headers["Last-Modified"]) == full.this_update
    assert email.utils.parsedate_to_datetime(r.headers["Expires"]) == full.next_update
    etag = r.headers["ETag"]
    assert client.get("/pki/crl/issuing.crl", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/pki/crl/issuing.crl", headers={
        "If-Modified-Since": r.headers["Last-Modified"]}).status_code == 304
    h = client.head("/pki/crl/issuing.crl")
    assert h.status_code == 200 and h.data == b"" and h.headers["ETag"] == etag
    d = client.get("/pki/crl/issuing-delta.crl")
    assert d.status_code == 200 and d.data == delta.der
    assert client.get("/pki/certs/issuing.crt").data == ca_cert(
        services.db, "issuing").public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("path", [
    "/pki/crl/nope.crl", "/pki/crl/root.crl", "/pki/crl/../../etc/passwd",
    "/pki/crl/..%2F..%2Fetc%2Fpasswd.crl", "/pki/crl/issuing.pem", "/pki/crl/ISSUING.crl",
    "/pki/crl/%00.crl", "/pki/crl/" + "a" * 300 + ".crl", "/pki/crl/-delta.crl"])
def test_crl_unknown_or_traversal_is_404(client, path):
    # root.crl: nothing published yet in this test -> 404 as well
    assert client.get(path).status_code == 404


def test_ocsp_post_and_get_with_rfc5019_headers(client, services, clock):
    responders(services).ensure("issuing")
    issuer = ca_cert(services.db, "issuing")
    row = issue(services)
    body = ocsp_request(row.der, issuer)
    r = client.post("/ocsp", data=body, content_type="application/ocsp-request")
    assert r.status_code == 200 and r.mimetype == "application/ocsp-response"
    resp = ocsp.load_der_ocsp_response(r.data)
    assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD
    g = client.get("/ocsp/" + base64.b64encode(body).decode())
    assert g.status_code == 200 and g.data == r.data
    assert "max-age=" in g.headers["Cache-Control"] and "public" in g.headers["Cache-Control"]
    assert email.utils.parsedate_to_datetime(g.headers["Expires"]) == resp.next_update_utc
    assert email.utils.parsedate_to_datetime(g.headers["Last-Modified"]) == resp.this_update_utc
    assert client.get("/ocsp/" + base64.b64encode(body).decode(),
                      headers={"If-None-Match": g.headers["ETag"]}).status_code == 304
    # URL-encoded base64 (RFC 6960 A.1) works too
    from urllib.parse import quote
    assert client.get("/ocsp/" + quote(base64.b64encode(body).decode(), safe="")).data == r.data
    # revocation shows up on the next answer (the in-process cache holds answers 2 s at most)
    revocation.revoke(services.db, clock, serial=row.serial, reason="keyCompromise", actor="t")
    client.application.extensions["govca.ocsp"].forget()
    r2 = client.post("/ocsp", data=body, content_type="application/ocsp-request")
    assert ocsp.load_der_ocsp_response(r2.data).certificate_status == ocsp.OCSPCertStatus.REVOKED
    n = client.post("/ocsp", data=ocsp_request(row.der, issuer, nonce=b"n" * 16),
                    content_type="application/ocsp-request")
    assert n.headers["Cache-Control"] == "no-store"


def _status(data: bytes):
    return ocsp.load_der_ocsp_response(data).response_status


def test_ocsp_bad_input_is_never_500_and_changes_nothing(client, services):
    responders(services).ensure("issuing")
    issuer = ca_cert(services.db, "issuing")
    row = issue(services)
    with services.db.transaction() as s:
        before = (s.execute(select(func.count(OcspResponse.id))).scalar_one(),
                  s.execute(select(func.count(AuditEvent.id))).scalar_one(),
                  s.execute(select(func.count(PublishedCRL.id))).scalar_one())
    malformed = ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    for data in (b"", b"garbage", b"\x30\x82\xff\xff", b"\x00" * 5000):
        r = client.post("/ocsp", data=data, content_type="application/ocsp-request")
        assert r.status_code == 200 and _status(r.data) == malformed
    big = client.post("/ocsp", data=b"\x30" * (64 * 1024), content_type="application/ocsp-request")
    assert big.status_code in (200, 413) and (big.status_code == 413 or _status(big.data) == malformed)
    wrong = client.post("/ocsp", data=ocsp_request(row.der, issuer), content_type="text/plain")
    assert wrong.status_code == 415
    for path in ("/ocsp/!!!!", "/ocsp/" + base64.b64encode(b"not a request").decode(),
                 "/ocsp/", "/ocsp/%00%01"):
        r = client.get(path)
        assert r.status_code == 200 and _status(r.data) == malformed, path
    assert client.get("/ocsp/" + "A" * 10000).status_code == 414
    with services.db.transaction() as s:
        after = (s.execute(select(func.count(OcspResponse.id))).scalar_one(),
                 s.execute(select(func.count(AuditEvent.id))).scalar_one(),
                 s.execute(select(func.count(PublishedCRL.id))).scalar_one())
    assert after == before
