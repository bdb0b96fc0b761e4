"""Done when (issue 5): 10,000+ subscribers in the 63 old provinces, the real 63->34 plan run by
`govca reorg run` in a subprocess, SIGKILLed mid-way, restarted, and the end state checked."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections import Counter

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from ca import audit
from ca.clock import UTC
from ca.reorg.throttle import ca_sign_rate
from ca.store.models import AuditEvent, Certificate, RaDomain, Subscriber
from ca.store.models_crl import PublishedCRL
from ca.store.models_reorg import ReorgJob, ReorgWork
from tests.integration.test_core_cli import VENV_BIN, cli_env, run_cli
from tests.reorg import world

N_PERSONS = 10_000


def _ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


@pytest.mark.slow
@pytest.mark.timeout(1500)  # SQLite ≈ 5.5 min; PostgreSQL on this loaded 2-core box ≈ 14 min
def test_63_to_34_with_a_sigkill_in_the_middle(db, key_store, clock, profiles, hsm_config,
                                               tmp_path):
    t0 = time.perf_counter()
    world.populate(db, key_store, clock, profiles, n_persons=N_PERSONS)
    with db.transaction() as s:
        persons = s.execute(select(func.count()).select_from(Subscriber).where(
            Subscriber.kind == "person")).scalar_one()
        old_domains = s.execute(select(func.count()).select_from(RaDomain).where(
            RaDomain.kind == "province")).scalar_one()
    assert persons >= N_PERSONS and old_domains == 63
    print(f"\nstarting state: {persons} people, 63 provinces, loaded in "
          f"{time.perf_counter() - t0:.1f} s")

    env = cli_env(tmp_path, hsm_config)
    out = _ok(run_cli(env, "reorg", "load-csv", "builtin", "--name", "Sáp nhập tỉnh 2025"))
    plan_id = int(out.split()[1])
    # the preparer (the console) cannot approve; the operator can
    refused = run_cli(env, "reorg", "run", str(plan_id), "--hsm-rate", "800")
    assert refused.returncode != 0 and b"not approved" in refused.stderr
    _ok(run_cli(env, "reorg", "approve", str(plan_id), "--as", "operator"))

    raw_rate = ca_sign_rate(db, key_store, seconds=2.0)  # RSA-2048 issuing key, raw PKCS#11
    dry = json.loads(_ok(run_cli(env, "reorg", "dry-run", str(plan_id), "--json",
                                 "--hsm-rate", f"{raw_rate:.1f}")))

    # The dry run's figures against SQL on the starting state.
    now = dt.datetime.now(UTC)
    with db.transaction() as s:
        absorbed = s.execute(select(RaDomain.id).where(RaDomain.code.in_(
            [c for item in _plan_sources(s, plan_id) for c in item]))).scalars().all()
        assert len(absorbed) == 63 - 34
        kinds = Counter(s.execute(select(Subscriber.kind).join(
            Certificate, Certificate.subscriber_id == Subscriber.id).where(
            Subscriber.domain_id.in_(absorbed), Certificate.state == "issued",
            Certificate.revoked_at.is_(None), Certificate.not_after > now)).scalars())
        affected_subs = s.execute(select(func.count()).select_from(Subscriber).where(
            Subscriber.domain_id.in_(absorbed))).scalar_one()
    assert dry["subscribers"] == affected_subs
    assert dry["certificates"] == kinds["person"] + kinds["organization"]
    assert dry["personal_change"] == kinds["person"]
    assert dry["seal_revoke"] == 29 and dry["seal_change"] == kinds["organization"] - 29
    assert dry["estimated_seconds"] > 0

    # The worker, killed after some progress is visible in the database.
    cmd = [str(VENV_BIN / "govca"), "reorg", "run", str(plan_id), "--batch", "50",
           "--hsm-rate", f"{raw_rate:.1f}"]
    t_run = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done_at_kill = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        with db.transaction() as s:
            done_at_kill = s.execute(select(func.count()).select_from(ReorgWork).where(
                ReorgWork.plan_id == plan_id, ReorgWork.state == "done")).scalar_one()
        if done_at_kill >= 400:
            break
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    with db.transaction() as s:
        states = Counter(s.execute(select(ReorgWork.state).where(
            ReorgWork.plan_id == plan_id)).scalars())
    total = sum(states.values())
    assert total == dry["certificates"]
    assert 0 < states["done"] < total, states

    # Restart: the same command resumes, takes the dead worker's lease, finishes.
    rerun = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
    elapsed = time.perf_counter() - t_run
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]

    now = dt.datetime.now(UTC)
    with db.transaction() as s:
        job = s.get(ReorgJob, plan_id)
        assert job.runs == 2 and job.phase == "finished"
        work = s.execute(select(ReorgWork).where(ReorgWork.plan_id == plan_id)).scalars().all()
        assert Counter(w.state for w in work) == {"done": total}
        localities = dict(s.execute(select(RaDomain.id, RaDomain.locality)).all())
        # every affected subscriber: exactly one valid certificate, with the new province in L
        changed = [w for w in work if w.action == "change"]
        valid = Counter()
        for c in s.execute(select(Certificate).where(
                Certificate.subscriber_id.in_([w.subscriber_id for w in work]),
                Certificate.state == "issued", Certificate.revoked_at.is_(None),
                Certificate.not_after > now)).scalars():
            valid[c.subscriber_id] += 1
            sub = s.get(Subscriber, c.subscriber_id)
            loc = x509.load_der_x509_certificate(c.der).subject.get_attributes_for_oid(
                NameOID.LOCALITY_NAME)[0].value
            assert loc == localities[sub.domain_id], (loc, sub.id)
        assert all(valid[w.subscriber_id] == 1 for w in changed)
        assert all(valid[w.subscriber_id] == 0 for w in work if w.action == "revoke")
        # every old certificate revoked exactly once, with the right reason, one audit event
        olds = {c.serial: c for c in s.execute(select(Certificate).where(
            Certificate.serial.in_([w.old_serial for w in work]))).scalars()}
        for w in work:
            assert olds[w.old_serial].revoked_at is not None
            assert olds[w.old_serial].revocation_reason == w.reason
        assert {w.reason for w in changed} == {"affiliationChanged"}
        revokes = Counter(s.execute(select(AuditEvent.target).where(
            AuditEvent.action == "cert.revoke")).scalars())
        assert all(revokes[f"issuing:{w.old_serial}"] == 1 for w in work)
        assert sum(revokes.values()) == total
        # each change has its issuance audited with the work item; no serial twice
        issued = s.execute(select(AuditEvent.details).where(
            AuditEvent.action == "cert.issue",
            AuditEvent.details.like(f'%"reorg_plan":{plan_id}%'))).scalars().all()
        assert sorted(json.loads(d)["reorg_work"] for d in issued) == sorted(w.id for w in changed)
        assert s.execute(select(func.count()).select_from(Certificate)).scalar_one() == \
            s.execute(select(func.count(func.distinct(Certificate.serial)))).scalar_one()
        assert s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.state == "reserved")).scalar_one() == 0
        assert not audit.verify_chain(s), "the audit chain has problems"
        # relying parties: the CRL published at the end lists every old certificate
        crl_der = s.execute(select(PublishedCRL.der).where(PublishedCRL.kind == "full")
                            .order_by(PublishedCRL.crl_number.desc()).limit(1)).scalar_one()
    crl = x509.load_der_x509_crl(crl_der)
    listed = {format(r.serial_number, "x"): r for r in crl}
    for w in work:
        entry = listed[w.old_serial]
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        assert reason.name == {"affiliationChanged": "affiliation_changed",
                               "cessationOfOperation": "cessation_of_operation"}[w.reason]
    assert b"published CRL" in rerun.stdout
    rate = total / elapsed
    print(f"reorg 63->34: {total} certificates ({len(changed)} changed, "
          f"{total - len(changed)} revoked only) in {elapsed:.1f} s incl. SIGKILL+restart at "
          f"{done_at_kill}: {rate:.1f} certificates/s; raw HSM RSA-2048 signing rate "
          f"{raw_rate:.0f}/s (ratio {rate / raw_rate:.3f})")


def _plan_sources(s, plan_id):
    from ca.reorg.plans import items_of
    codes = dict(s.execute(select(RaDomain.id, RaDomain.code)).all())
    return [[codes[d] for d in it.source_ids] for it in items_of(s, plan_id)]
