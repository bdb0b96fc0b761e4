"""Beyond one machine (issue 8, point 4): two `govca serve` processes on two ports over one
PostgreSQL database, each with the in-process scheduler and two gunicorn workers, as two hosts
behind a load balancer would run. Issuance through both never collides, exactly one scheduler
leads (the database lease), and a revocation made through one server is answered by OCSP
through the other within seconds."""
from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from sqlalchemy import select

from ca.store.models_crl import SchedulerLease
from ca.store.models_ops import SchedulerRun
from tests.conftest import PG_URL
from tests.crl.helpers import ca_cert, ocsp_request
from tests.faults.helpers import api_token, approve_until_done, call, staff_ids, submit_issue
from tests.serverkit import GovcaServer, free_port, govca_env, http

pytestmark = pytest.mark.postgres_only


def serve(tmp_path: Path, hsm_config, name: str) -> GovcaServer:
    """`govca serve --listen 127.0.0.1:PORT --workers 2` with its own instance folder, the
    in-process scheduler every second, and none of this process's GOVCA_* settings."""
    instance = tmp_path / name
    instance.mkdir()
    port = free_port()
    env = govca_env(instance=instance, database_url=PG_URL, hsm_config=hsm_config,
                    base_url=f"http://127.0.0.1:{port}", scheduler_interval=1,
                    inherit_govca=False)
    return GovcaServer(env, log_path=instance / "serve.log", port=port, workers=2, serve=True)


def _worker_pids(serve: GovcaServer) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(serve.proc.pid)],
                         capture_output=True, text=True).stdout
    return {int(p) for p in out.split()} | {serve.proc.pid}


def _ocsp_status(base: str, der: bytes):
    st, _, body = http(base + "/ocsp", data=der,
                       headers={"Content-Type": "application/ocsp-request"})
    assert st == 200
    resp = ocsp.load_der_ocsp_response(body)
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return resp.response_status
    return resp.certificate_status


def test_two_servers_over_one_postgresql(db, hsm_config, tmp_path):
    a = serve(tmp_path, hsm_config, "host-a")
    b = serve(tmp_path, hsm_config, "host-b")
    try:
        a.wait_ready()
        b.wait_ready()
        started = time.time()
        officer, approver = api_token(db, "ra.hanoi"), api_token(db, "approver.hanoi")
        subs = staff_ids(db)

        # Concurrent issuance: requests made on one server, approved on the other.
        results, errors = [], []

        def worker(submit_on: str, approve_on: str, n: int) -> None:
            try:
                for i in range(n):
                    rid = submit_issue(submit_on, officer, subs[i % len(subs)])
                    results.append(approve_until_done(approve_on, approver, rid,
                                                      time.monotonic() + 60))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(x.base, y.base, 4))
                   for x, y in ((a, b), (b, a), (a, a), (b, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not errors, errors
        assert len(results) == 16 and all(r["state"] == "issued" for r in results), results
        serials = [r["certificate_serial"] for r in results]
        assert len(set(serials)) == 16, "two issuances got the same serial"

        # One scheduler leader: every job run since start came from one holder, in one of
        # the four worker processes, and the lease names it.
        time.sleep(3)
        with db.transaction() as s:
            runs = s.execute(select(SchedulerRun.holder).where(
                SchedulerRun.started_at >= _utc(started))).scalars().all()
            lease = s.execute(select(SchedulerLease)).scalars().all()
        assert len(runs) >= 3, "the scheduler did not run"
        holders = set(runs)
        assert len(holders) == 1, f"several schedulers led: {holders}"
        assert len(lease) == 1 and lease[0].holder in holders
        leader_pid = int(lease[0].holder.split(":")[1])
        in_a, in_b = leader_pid in _worker_pids(a), leader_pid in _worker_pids(b)
        assert in_a != in_b, "the leader is not one of the two servers' processes"

        # A revocation through A is answered by OCSP through B within seconds.
        serial = serials[0]
        st, _, cert = call(a.base, "GET", f"/api/v1/certificates/{serial}", officer)
        assert st == 200
        der = x509.load_pem_x509_certificate(cert["pem"].encode()).public_bytes(Encoding.DER)
        request = ocsp_request(der, ca_cert(db, "issuing"))
        assert _ocsp_status(b.base, request) == ocsp.OCSPCertStatus.GOOD
        st, _, req = call(a.base, "POST", f"/api/v1/certificates/{serial}/revoke", officer,
                          {"reason": "keyCompromise"})
        assert st == 202, req
        st, _, done = call(a.base, "POST", f"/api/v1/requests/{req['id']}/approve", approver)
        assert st == 200 and done["state"] == "done", done
        revoked_at = time.monotonic()
        while _ocsp_status(b.base, request) != ocsp.OCSPCertStatus.REVOKED:
            assert time.monotonic() - revoked_at < 10, "server B still says good"
            time.sleep(0.2)
        st, _, seen = call(b.base, "GET", f"/api/v1/certificates/{serial}", officer)
        assert seen["status"] == "revoked" and seen["revocation_reason"] == "keyCompromise"
    finally:
        a.stop()
        b.stop()
    for server in (a, b):
        server.assert_clean_log()


def _utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc)
