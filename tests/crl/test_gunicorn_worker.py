"""The OCSP gunicorn worker (crl/gunicorn_worker.py) in a real gunicorn: kept-alive OCSP requests
take the fast path and answer exactly what the WSGI path answers (checked by `openssl ocsp` and
cryptography), everything else -- other paths, HEAD, chunked bodies, pipelined requests, bad
heads -- falls back to gunicorn's own parser on the same connection, and a revocation shows
within seconds."""
from __future__ import annotations

import base64
import dataclasses
import email.utils
import http.client
import socket
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from sqlalchemy import select

from ca import revocation
from ca.clock import SystemClock
from ca.store.models_crl import OcspResponder
from crl.gunicorn_worker import parse_fast
from tests.conftest import database_url
from tests.crl.helpers import ca_cert, issue, ocsp_request, responders
from tests.crl.server import Server, free_port, http as http_get
from tests.tools import openssl, pem, write


@pytest.fixture
def world(db, settings, profiles, key_store, hsm_config, tmp_path):
    from ra_portal.wiring import Services
    port = free_port()
    svc = Services(settings=dataclasses.replace(settings, base_url=f"http://127.0.0.1:{port}"),
                   db=db, clock=SystemClock(), profiles=profiles, _keys=key_store)
    responders(svc).ensure("issuing")
    good, bad = issue(svc, "staff.hanoi.1"), issue(svc, "staff.hanoi.2")
    revocation.revoke(db, svc.clock, serial=bad.serial, reason="keyCompromise", actor="test")
    (tmp_path / "profiles.json").write_text("{}")
    server = Server(port=port, database_url=database_url(tmp_path), hsm_config=hsm_config,
                    instance=tmp_path, workers=1, scheduler_interval=None,
                    extra_args=("--worker-class", "crl.gunicorn_worker.OcspWorker",
                                "--threads", "4", "--keep-alive", "30"))
    try:
        server.wait_ready()
        yield {"svc": svc, "server": server, "port": port, "good": good, "bad": bad,
               "issuer": ca_cert(db, "issuing")}
    finally:
        server.stop()


def _openssl_check(tmp_path, svc, issuer, cert_der, answer: bytes, expected: str) -> None:
    with svc.db.transaction() as s:
        responder = s.execute(select(OcspResponder.certificate_der)).scalars().first()
    r = openssl("ocsp", "-respin", str(write(tmp_path / "a.der", answer)),
                "-issuer", str(write(tmp_path / "i.pem", pem(issuer))),
                "-cert", str(write(tmp_path / "c.pem", pem(x509.load_der_x509_certificate(
                    cert_der)))),
                "-VAfile", str(write(tmp_path / "r.pem", pem(x509.load_der_x509_certificate(
                    responder)))), "-no_nonce")
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0 and "Response verify OK" in out, out
    assert f": {expected}" in out, out


def test_kept_alive_ocsp_requests_take_the_fast_path_and_answer_the_same(world, tmp_path):
    svc, issuer, good, bad = world["svc"], world["issuer"], world["good"], world["bad"]
    conn = http.client.HTTPConnection("127.0.0.1", world["port"], timeout=10)
    path = "/ocsp/" + base64.b64encode(ocsp_request(good.der, issuer)).decode()
    answers = []
    for _ in range(5):  # the first through gunicorn's parser, the next ones the fast path
        conn.request("GET", path)
        r = conn.getresponse()
        answers.append((r.status, dict(r.getheaders()), r.read()))
    assert len({a[2] for a in answers}) == 1
    # gunicorn's own responses name it in a Server header; the fast path's do not
    assert "gunicorn" in answers[0][1].get("Server", "")
    assert all("Server" not in a[1] for a in answers[1:]), [a[1] for a in answers]
    for status, headers, body in answers:
        assert status == 200 and headers["Content-Type"] == "application/ocsp-response"
        assert int(headers["Content-Length"]) == len(body)
        assert "max-age=" in headers["Cache-Control"] and "public" in headers["Cache-Control"]
        resp = ocsp.load_der_ocsp_response(body)
        assert email.utils.parsedate_to_datetime(headers["Expires"]) == resp.next_update_utc
        assert email.utils.parsedate_to_datetime(headers["Last-Modified"]) == \
            resp.this_update_utc
        assert headers["ETag"] == answers[0][1]["ETag"] and "Date" in headers
    _openssl_check(tmp_path, svc, issuer, good.der, answers[0][2], "good")
    # conditional GET on the fast path
    conn.request("GET", path, headers={"If-None-Match": answers[0][1]["ETag"]})
    r = conn.getresponse()
    assert r.status == 304 and r.read() == b""
    # POST with a nonce: signed now, nonce echoed, not cacheable
    conn.request("POST", "/ocsp", body=ocsp_request(bad.der, issuer, nonce=b"n" * 20),
                 headers={"Content-Type": "application/ocsp-request"})
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200 and r.getheader("Cache-Control") == "no-store"
    resp = ocsp.load_der_ocsp_response(body)
    assert resp.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 20
    # bad input on the fast path: an OCSP error status or a 4xx, never a 500
    conn.request("GET", "/ocsp/not-base64!!")
    r = conn.getresponse()
    assert r.status == 200 and ocsp.load_der_ocsp_response(r.read()).response_status == \
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    conn.request("POST", "/ocsp", body=b"x", headers={"Content-Type": "text/plain"})
    r = conn.getresponse()
    assert r.status == 415 and r.read()
    conn.request("POST", "/ocsp", body=b"\x30\x03\x02\x01",
                 headers={"Content-Type": "application/ocsp-request"})
    r = conn.getresponse()
    assert ocsp.load_der_ocsp_response(r.read()).response_status == \
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    # other paths and methods on the same kept-alive connection go to Flask through gunicorn
    conn.request("GET", "/pki/certs/issuing.crt")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == ca_cert(svc.db, "issuing").public_bytes(Encoding.DER)
    conn.request("HEAD", path)
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b""
    conn.request("GET", "/healthz")
    assert conn.getresponse().read()
    conn.request("GET", path)  # and OCSP again after the fallbacks
    r = conn.getresponse()
    assert r.status == 200 and r.read() == answers[0][2]
    conn.close()


def _read_response(f) -> tuple[int, dict, bytes]:
    status = int(f.readline().split()[1])
    headers = {}
    while True:
        line = f.readline().rstrip(b"\r\n")
        if not line:
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            n = int(f.readline().strip(), 16)
            chunk = f.read(n + 2)[:n]
            if n == 0:
                break
            body += chunk
        return status, headers, body
    return status, headers, f.read(int(headers.get("content-length", 0)))


def test_unusual_requests_fall_back_to_gunicorn(world):
    issuer, good = world["issuer"], world["good"]
    req = ocsp_request(good.der, issuer)
    path = "/ocsp/" + base64.b64encode(req).decode()
    with socket.create_connection(("127.0.0.1", world["port"]), timeout=10) as s:
        f = s.makefile("rb")
        get = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        s.sendall(get)  # the first request of the connection: gunicorn's path
        first = _read_response(f)
        assert first[0] == 200
        s.sendall(get)  # kept alive: the fast path
        fast = _read_response(f)
        assert fast[2] == first[2] and "server" not in fast[1] and "server" in first[1]
        s.sendall(get + get)  # pipelined: gunicorn's parser answers both, in order
        for _ in range(2):
            status, headers, body = _read_response(f)
            assert body == first[2] and "gunicorn" in headers["server"]
        # a chunked POST body
        chunked = (b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request"
                   b"\r\nTransfer-Encoding: chunked\r\n\r\n" + f"{len(req):x}".encode() +
                   b"\r\n" + req + b"\r\n0\r\n\r\n")
        s.sendall(chunked)
        status, _, body = _read_response(f)
        assert status == 200 and body == first[2]
        # a body sent in two pieces (the first read has only the head)
        post = (f"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\n"
                f"Content-Length: {len(req)}\r\n\r\n").encode()
        s.sendall(post)
        time.sleep(0.2)
        s.sendall(req)
        status, _, body = _read_response(f)
        assert status == 200 and body == first[2]
        # Connection: close is honoured
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        status, headers, body = _read_response(f)
        assert status == 200 and body == first[2] and headers["connection"] == "close"
        assert f.read() == b""  # closed by the server
    with socket.create_connection(("127.0.0.1", world["port"]), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert _read_response(f)[0] == 200
        # a space before the colon: not ours; gunicorn rejects it with a 4xx
        s.sendall(f"GET {path} HTTP/1.1\r\nHost : x\r\n\r\n".encode())
        assert 400 <= _read_response(f)[0] < 500


def test_parse_fast_is_narrow():
    ok = b"GET /ocsp/MEMwQTA%2FMD0 HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\n\r\n"
    environ, close = parse_fast(ok)
    assert environ["PATH_INFO"] == "/ocsp/MEMwQTA/MD0" and environ["HTTP_IF_NONE_MATCH"] == '"x"'
    assert not close
    post = b"POST /ocsp HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    environ, close = parse_fast(post)
    assert environ["wsgi.input"].read() == b"abc" and close
    for bad in (
        b"GET /ocsp/x HTTP/1.0\r\n\r\n", b"HEAD /ocsp/x HTTP/1.1\r\n\r\n",
        b"GET /other HTTP/1.1\r\n\r\n", b"GET /ocspx HTTP/1.1\r\n\r\n",
        b"GET /ocsp/x?y HTTP/1.1\r\n\r\n", b"GET /ocsp/x HTTP/1.1\r\nHost: a\r\n",
        b"GET /ocsp/x HTTP/1.1\r\nHost : a\r\n\r\n", b"GET /ocsp/x HTTP/1.1\r\n folded\r\n\r\n",
        b"GET /ocsp/x HTTP/1.1\r\nA: 1\r\na: 2\r\n\r\n",
        b"GET /ocsp/x HTTP/1.1\r\n\r\nGET /ocsp/x HTTP/1.1\r\n\r\n",
        b"POST /ocsp HTTP/1.1\r\nContent-Length: 4\r\n\r\nabc",
        b"POST /ocsp HTTP/1.1\r\nContent-Length: 2\r\n\r\nabc",
        b"POST /ocsp HTTP/1.1\r\n\r\nabc",
        b"POST /ocsp HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
        b"POST /ocsp HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /ocsp HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /ocsp/x HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
        b"GET /ocsp/\xff HTTP/1.1\r\n\r\n", b"GET  /ocsp/x HTTP/1.1\r\n\r\n",
    ):
        assert parse_fast(bad) is None, bad


def test_a_revocation_shows_within_seconds(world):
    svc, issuer, good = world["svc"], world["issuer"], world["good"]
    conn = http.client.HTTPConnection("127.0.0.1", world["port"], timeout=10)
    path = "/ocsp/" + base64.b64encode(ocsp_request(good.der, issuer)).decode()

    def status():
        conn.request("GET", path)
        return ocsp.load_der_ocsp_response(conn.getresponse().read()).certificate_status
    for _ in range(3):
        assert status() == ocsp.OCSPCertStatus.GOOD
    revocation.revoke(svc.db, svc.clock, serial=good.serial, reason="keyCompromise",
                      actor="test")
    t0 = time.monotonic()
    while status() != ocsp.OCSPCertStatus.REVOKED:
        assert time.monotonic() - t0 < 5, "revocation not visible within 5 s"
        time.sleep(0.05)
    conn.close()
    assert http_get(world["server"].base + "/healthz")[0] == 200
