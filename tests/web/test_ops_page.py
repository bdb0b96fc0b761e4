"""Operations page: central operators and auditors only; CA keys read from the HSM, CRL/OCSP
freshness, scheduler lease and the recorded last runs (success and failure), intents, audit
checkpoint lag; OCSP request counters and latency on /metrics."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from ca.audit_checkpoint import init_key
from ca.store.models_ops import SchedulerRun
from crl.scheduler import Lease, Scheduler, build_jobs, record_run


def test_only_the_centre_sees_the_operations_page(login_as):
    for user in ("ra.hanoi", "approver.quangninh", "staff.hanoi.1"):
        assert login_as(user).get("/ops/").status_code == 403
    for user in ("operator", "auditor"):
        r = login_as(user).get("/ops/")
        assert r.status_code == 200
        text = r.get_data(as_text=True)
        assert 'data-ca="root"' in text and 'data-ca="issuing"' in text
        assert "Chưa có lần chạy nào." in text


def test_scheduler_runs_checkpoint_and_last_runs_are_shown(login_as, services, clock, db):
    init_key(services.db, services.keys, services.issuance(), services.clock, actor="test")
    sched = Scheduler(build_jobs(services), Lease(db, clock, holder="test-leader"))
    assert sched.run_job("publish_crls")
    cp = sched.run_job("audit_checkpoint")
    assert cp["seq"] >= 1
    assert sched.run_job("audit_checkpoint") is None  # nothing new: no second checkpoint
    assert sched.run_job("expiry_reminders") == 0  # no SMTP host configured
    assert sched.run_job("refresh_ocsp") >= 0
    # a follower runs nothing and records nothing
    follower = Scheduler(build_jobs(services), Lease(db, clock, holder="other"))
    assert follower.run_job("publish_crls") is None

    def boom():
        raise RuntimeError("HSM session lost")
    with pytest.raises(RuntimeError):
        record_run(db, clock, "publish_crls", "test-leader", boom)
    with db.transaction() as s:
        runs = s.execute(select(SchedulerRun).order_by(SchedulerRun.id)).scalars().all()
        assert [r.job for r in runs] == ["publish_crls", "audit_checkpoint", "audit_checkpoint",
                                         "expiry_reminders", "refresh_ocsp", "publish_crls"]
        assert [r.ok for r in runs] == [True] * 5 + [False]
        assert runs[-1].message == "RuntimeError: HSM session lost"
        assert all(r.finished_at is not None and r.holder == "test-leader" for r in runs)
    text = login_as("operator").get("/ops/").get_data(as_text=True)
    for job in ("publish_crls", "audit_checkpoint", "expiry_reminders", "refresh_ocsp"):
        assert f'data-job="{job}"' in text
    row = re.search(r'<tr data-job="publish_crls">(.*?)</tr>', text, re.S).group(1)
    assert "lỗi" in row and "RuntimeError: HSM session lost" in row
    assert "test-leader" in text  # the lease holder
    audit = re.search(r'<ul id="audit">(.*?)</ul>', text, re.S).group(1)
    assert f"seq {cp['seq']}" in audit and "govca-audit-" in audit
    assert re.search(r"truy cập được", text)


def test_ocsp_requests_are_counted_on_metrics(app, client):
    before = client.get("/metrics").get_data(as_text=True)
    r = client.post("/ocsp", data=b"not an ocsp request",
                    headers={"Content-Type": "application/ocsp-request"})
    assert r.status_code == 200
    after = client.get("/metrics").get_data(as_text=True)
    assert "govca_ocsp_requests_total" in after and "govca_ocsp_response_seconds_bucket" in after
    post = re.compile(r'^govca_ocsp_requests_total\{method="POST"\} ([0-9.e+]+)$', re.M)
    count = re.compile(r"^govca_ocsp_response_seconds_count ([0-9.e+]+)$", re.M)
    b_post = float(post.search(before).group(1)) if post.search(before) else 0.0
    b_count = float(count.search(before).group(1)) if count.search(before) else 0.0
    assert float(post.search(after).group(1)) == b_post + 1
    assert float(count.search(after).group(1)) == b_count + 1


def test_old_runs_are_pruned_and_unknown_jobs_refused(services, clock, db):
    sched = Scheduler(build_jobs(services), Lease(db, clock, holder="leader",
                                                  ttl=dt.timedelta(days=30)))
    sched.run_job("expiry_reminders")
    sched.run_job("publish_crls")
    clock.advance(days=15)
    sched.run_job("expiry_reminders")
    with db.transaction() as s:
        jobs = [r.job for r in s.execute(select(SchedulerRun).order_by(SchedulerRun.id))
                .scalars()]
    assert jobs == ["publish_crls", "expiry_reminders"]  # the 15-day-old reminder run is gone
    with pytest.raises(ValueError):
        sched.run_job("drop_tables")
