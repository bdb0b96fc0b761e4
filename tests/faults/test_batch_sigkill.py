"""SIGKILL in the middle of a batch approval (POST /requests/approve-batch): after the serials
were reserved, and after the HSM signed. Then `govca ca recover` must leave every request either
issued with exactly one stored, verifiable certificate, or back to 'submitted' with nothing
issued; no serial 'reserved'; an intact audit chain. Approving the rest again issues each of
them exactly once."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from ca import audit
from ca.ra import requests as ra_requests
from ca.ra.approval_batch import approve_batch
from ca.store.models import Certificate, CertificateAuthority
from ca.store.models_ra import RaRequest
from tests import factories
from tests.faults.helpers import HsmCopy
from tests.integration.test_core_cli import cli_env, run_cli
from tests.ra.conftest import caller_of, staff_id  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
N = 12


def _submitted_requests(db, clock, caller_of, profiles) -> list[int]:
    officer = caller_of("ra.hanoi")
    subs = [staff_id(db, f"staff.hanoi.{i}") for i in (1, 2, 3)]
    ids = []
    with db.transaction() as s:
        for i in range(N):
            req = ra_requests.create(s, clock, officer, {
                "type": "issue", "subscriber_id": subs[i % len(subs)], "profile": "personal",
                "csr_pem": factories.csr(factories.key("p256")).decode(), "submit": True},
                profiles)
            ids.append(req.id)
    with db.transaction() as s:
        assert {r.state for r in s.execute(select(RaRequest).where(
            RaRequest.id.in_(ids))).scalars()} == {"submitted"}
    return ids


@pytest.mark.parametrize("point", ["after_reserve", "after_sign", "after_store"])
def test_sigkill_inside_a_batch_approval_loses_nothing(point, db, clock, caller_of, profiles,
                                                       issuance, hsm_config, tmp_path):
    ids = _submitted_requests(db, clock, caller_of, profiles)
    with db.transaction() as s:
        first_new = (s.execute(select(Certificate.id).order_by(Certificate.id.desc()))
                     .scalars().first() or 0) + 1
        ca_cert = x509.load_der_x509_certificate(s.execute(select(
            CertificateAuthority.certificate_der).where(
            CertificateAuthority.name == "issuing")).scalar_one())
    # A private token copy: a kill during SoftHSM's token-file rewrite must not hurt the others.
    hsm = HsmCopy(hsm_config, tmp_path / "hsm")
    env = cli_env(tmp_path, hsm_config, SOFTHSM2_CONF=str(hsm.conf))
    proc = subprocess.run([sys.executable, "-m", "tests.faults.batch_approver",
                           "approver.hanoi", *map(str, ids)], cwd=ROOT,
                          env={**env, "GOVCA_TEST_FAULT": point}, capture_output=True,
                          timeout=300)
    assert proc.returncode == 137, proc.stderr.decode()[-3000:]  # died at the fault point
    assert b"DONE" not in proc.stdout
    with db.transaction() as s:
        # Interrupted half-way; after the store, the requests' final states were committed
        # with their certificates (one transaction), so nothing is left to settle.
        assert {r.state for r in s.execute(select(RaRequest).where(
            RaRequest.id.in_(ids))).scalars()} == (
            {"issued"} if point == "after_store" else {"approved"})

    rec = run_cli(env, "ca", "recover", "--older-than-minutes", "0", timeout=120)
    assert rec.returncode == 0, rec.stderr.decode()

    with db.transaction() as s:
        reqs = s.execute(select(RaRequest).where(RaRequest.id.in_(ids))).scalars().all()
        certs = s.execute(select(Certificate).where(Certificate.id >= first_new)).scalars().all()
        assert not audit.verify_chain(s)
    states = {r.state for r in reqs}
    assert states <= {"issued", "submitted"}, states
    assert not [c for c in certs if c.state == "reserved"], "a serial was left reserved"
    issued = [c for c in certs if c.state == "issued"]
    if point == "after_store":
        # Stored, with the requests' final states, before the kill: recovery changes
        # nothing; nothing is issued twice.
        assert states == {"issued"} and len(issued) == N
        assert sorted(r.certificate_serial for r in reqs) == sorted(c.serial for c in issued)
        for c in issued:
            x509.load_der_x509_certificate(c.der).verify_directly_issued_by(ca_cert)
        assert approve_batch(db, clock, caller_of("approver.hanoi"), ids, issuance)[0][1] \
            is not None  # nothing left to approve
        return
    # Killed before anything was stored: nothing issued, every request back to 'submitted'.
    assert not issued and states == {"submitted"}
    assert all(r.approved_by is None and r.certificate_serial is None for r in reqs)

    # Approving again (in this process) issues each request exactly once.
    results = approve_batch(db, clock, caller_of("approver.hanoi"), ids, issuance)
    assert [r.state for r, err, _c in results] == ["issued"] * N, [e for _r, e, _c in results]
    with db.transaction() as s:
        reqs = s.execute(select(RaRequest).where(RaRequest.id.in_(ids))).scalars().all()
        certs = s.execute(select(Certificate).where(Certificate.id >= first_new,
                                                    Certificate.state == "issued")
                          ).scalars().all()
        assert not audit.verify_chain(s)
    serials = [r.certificate_serial for r in reqs]
    assert len(set(serials)) == N and sorted(serials) == sorted(c.serial for c in certs)
    for c in certs:
        cert = x509.load_der_x509_certificate(c.der)
        cert.verify_directly_issued_by(ca_cert)
