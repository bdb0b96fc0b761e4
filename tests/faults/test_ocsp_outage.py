"""OCSP while the HSM is down (issue 8, point 5): pre-signed answers keep being served, byte for
byte, until they expire; whatever needs a signature now (a nonce, a certificate without a
pre-signed answer, an expired answer) gets the OCSP status tryLater (RFC 6960 4.2.1), never an
HTTP 500; once the token is back, signing works again without a restart."""
from __future__ import annotations

import datetime as dt
import os
import time

from cryptography.x509 import ocsp
from sqlalchemy import update

from ca.clock import SystemClock
from ca.store.models_crl import OcspResponse
from crl.scheduler import build_jobs
from tests.crl.helpers import ca_cert, issue, ocsp_request
from tests.faults.helpers import HsmCopy, start_server
from tests.crl.server import http


def _ask(base: str, der: bytes) -> tuple[int, dict, bytes]:
    return http(base + "/ocsp", data=der, headers={"Content-Type": "application/ocsp-request"})


def _status(body: bytes):
    return ocsp.load_der_ocsp_response(body).response_status


def test_presigned_ocsp_is_served_while_the_hsm_is_down(db, services, hsm_config, tmp_path):
    # The server runs on the system clock: responders and answers must be current now.
    services.clock = SystemClock()
    jobs = build_jobs(services)
    jobs.renew_responders()
    presigned_cert = issue(services, "staff.hanoi.1")
    assert jobs.refresh_ocsp() >= 1
    unsigned_cert = issue(services, "staff.hanoi.2")  # issued after the last pre-signing run
    issuer = ca_cert(db, "issuing")
    plain = ocsp_request(presigned_cert.der, issuer)
    with_nonce = ocsp_request(presigned_cert.der, issuer, nonce=os.urandom(16))
    miss = ocsp_request(unsigned_cert.der, issuer)
    with db.transaction() as s:
        stored = s.query(OcspResponse).filter_by(serial=presigned_cert.serial).one().der

    hsm = HsmCopy(hsm_config, tmp_path / "hsm")  # after the responder key was made
    server = start_server(tmp_path, hsm_config, hsm=hsm, workers=1)
    try:
        st, hdrs, body = _ask(server.base, plain)
        assert st == 200 and body == stored
        st, _, body = _ask(server.base, with_nonce)  # the HSM signs: it works
        assert st == 200 and _status(body) == ocsp.OCSPResponseStatus.SUCCESSFUL

        hsm.remove("token")
        for _ in range(3):
            st, hdrs, body = _ask(server.base, plain)
            assert st == 200 and body == stored, "the pre-signed answer must still be served"
            assert "max-age" in hdrs.get("Cache-Control", "")
            resp = ocsp.load_der_ocsp_response(body)
            assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD
        for der in (with_nonce, miss):
            st, hdrs, body = _ask(server.base, der)
            assert st == 200, body
            assert _status(body) == ocsp.OCSPResponseStatus.TRY_LATER
            assert hdrs.get("Cache-Control") == "no-store"
        # The pre-signed answer expires: then it needs a signature too, so tryLater.
        with db.transaction() as s:
            s.execute(update(OcspResponse).where(OcspResponse.serial == presigned_cert.serial)
                      .values(next_update=dt.datetime.now(dt.timezone.utc)
                              - dt.timedelta(minutes=1)))
        time.sleep(2.5)  # the responder's in-process cache (OcspSettings.cache_ttl)
        st, _, body = _ask(server.base, plain)
        assert st == 200 and _status(body) == ocsp.OCSPResponseStatus.TRY_LATER

        hsm.restore()
        deadline = time.monotonic() + 20
        while True:
            st, _, body = _ask(server.base, with_nonce)
            assert st == 200
            if _status(body) == ocsp.OCSPResponseStatus.SUCCESSFUL:
                break
            assert time.monotonic() < deadline, "signing did not come back"
            time.sleep(0.5)
        st, _, body = _ask(server.base, plain)  # re-signed and stored again
        assert _status(body) == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert ocsp.load_der_ocsp_response(body).certificate_status == ocsp.OCSPCertStatus.GOOD
        assert server.proc.poll() is None
    finally:
        server.stop()
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
