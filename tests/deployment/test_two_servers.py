"""Beyond one machine (issue 8, point 4): two `govca serve` processes on two ports over one
PostgreSQL database, each with the in-process scheduler and two gunicorn workers, as two hosts
behind a load balancer would run. Issuance through both never collides, exactly one scheduler
leads (the database lease), and a revocation made through one server is answered by OCSP
through the other within seconds."""
from __future__ import annotations

import datetime as dt
import os
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
from tests.crl.server import ROOT, free_port, http
from tests.faults.helpers import api_token, approve_until_done, call, staff_ids, submit_issue

pytestmark = pytest.mark.postgres_only
GOVCA = Path(ROOT) / ".venv" / "bin" / "govca"


class Serve:
    """`govca serve --listen 127.0.0.1:PORT --workers 2` with its own instance folder."""

    def __init__(self, tmp_path: Path, hsm_config, name: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        instance = tmp_path / name
        instance.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOVCA_")}
        env.update(GOVCA_INSTANCE=str(instance), GOVCA_DATABASE_URL=PG_URL,
                   GOVCA_PKCS11_MODULE=hsm_config.module,
                   GOVCA_PKCS11_TOKEN=hsm_config.token_label,
                   GOVCA_PKCS11_PIN_FILE=str(hsm_config.pin_file), GOVCA_BASE_URL=self.base,
                   GOVCA_SCHEDULER="inprocess", GOVCA_SCHEDULER_INTERVAL="1")
        self.log = instance / "serve.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen([str(GOVCA), "serve", "--listen", f"127.0.0.1:{self.port}",
                                      "--workers", "2"], env=env, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            try:
                if http(self.base + "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError("govca serve not ready:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


def _worker_pids(serve: Serve) -> set[int]:
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
    a, b = Serve(tmp_path, hsm_config, "host-a"), Serve(tmp_path, hsm_config, "host-b")
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
    for s in (a, b):
        log = s.log.read_text(errors="replace")
        assert "Traceback" not in log and '" 500 ' not in log, log[-3000:]


def _utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc)
