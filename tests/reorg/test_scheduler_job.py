"""The scheduler's `reorg_worker`: a plan started from the page or the API (control.start) runs
on the scheduler leader in bounded slices, with no `govca reorg run`; paused plans and plans
whose lease a live other worker holds are left alone."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from ca.reorg import control, executor
from ca.store.models import AuditEvent, CertificateAuthority
from ca.store.models_crl import PublishedCRL
from ca.store.models_ops import SchedulerRun
from ca.store.models_reorg import ReorgJob, ReorgPlan, ReorgWork
from crl import scheduler as sched_mod
from crl.scheduler import Lease, Scheduler, build_jobs
from tests.reorg.conftest import HSM_RATE
from tests.reorg.test_engine import approved_plan
from tests.reorg.test_resume import check_end_state


@pytest.fixture
def sched(services, clock, monkeypatch):
    monkeypatch.setenv("GOVCA_REORG_HSM_RATE", str(HSM_RATE))
    monkeypatch.setenv("GOVCA_REORG_SHARE", "0.5")
    return Scheduler(build_jobs(services), Lease(services.db, clock, holder="leader",
                                                 ttl=dt.timedelta(seconds=90)))


def counts(db, plan_id):
    with db.transaction() as s:
        state = s.get(ReorgPlan, plan_id).state
        by = dict(s.execute(select(ReorgWork.state, func.count()).where(
            ReorgWork.plan_id == plan_id).group_by(ReorgWork.state)).all())
    return state, by


def started_plan(db, preparer, operator, clock):
    plan_id = approved_plan(db, preparer, operator, clock)
    control.start(db, operator, plan_id, clock)  # what the API and the page button call
    return plan_id


def test_job_is_registered_and_runs_when_a_plan_runs(db, small_world, preparer, operator,
                                                     clock, sched, monkeypatch):
    assert "reorg_worker" in sched_mod.JOB_NAMES

    class Fake:
        def __init__(self):
            self.jobs = {}

        def add_job(self, fn, trigger, **kw):
            self.jobs[kw["id"]] = (fn, kw)
    fake = Fake()
    sched._add_jobs(fake)
    tick, kw = fake.jobs["reorg_worker"]
    assert kw["max_instances"] == 1 and kw["seconds"] == sched_mod.REORG_INTERVAL <= 5

    def runs():
        with db.transaction() as s:
            return s.execute(select(SchedulerRun.ok).where(
                SchedulerRun.job == "reorg_worker")).scalars().all()
    tick()  # nothing running: an idle tick records nothing
    assert runs() == []
    monkeypatch.setattr(sched_mod, "REORG_SLICE_ITEMS", 4)
    plan_id = started_plan(db, preparer, operator, clock)
    tick()  # what APScheduler calls on the leader
    assert runs() == [True]
    assert counts(db, plan_id)[1]["done"] == 4


def test_started_plan_runs_in_bounded_slices_to_the_cli_end_state(
        db, small_world, preparer, operator, clock, sched, monkeypatch):
    monkeypatch.setattr(sched_mod, "REORG_SLICE_ITEMS", 7)
    plan_id = started_plan(db, preparer, operator, clock)
    state, by = counts(db, plan_id)
    assert state == "running" and not by  # marked running; nothing executed it yet
    total, seen, ticks = None, 0, 0
    while True:
        out = sched.run_job("reorg_worker")
        ticks += 1
        assert ticks < 20
        if not out:
            break
        r = out[plan_id]
        assert 0 < r["processed"] <= 7  # a bounded slice that always progresses
        total = r["total"]
        state, by = counts(db, plan_id)
        assert by.get("done", 0) == seen + r["processed"]
        seen = by["done"]
        with db.transaction() as s:  # the lease is released between slices
            assert s.get(ReorgJob, plan_id).lease_owner is None
        if r["state"] == "done":
            assert sched.run_job("reorg_worker") == {}  # nothing running any more
            break
        assert state == "running" and r["state"] == "running"
    assert total and total > 7 and seen == total
    assert ticks >= 2 and ticks == -(-total // 7)
    check_end_state(db, plan_id, clock)  # new certificates; old ones revoked exactly once
    with db.transaction() as s:
        assert s.get(ReorgPlan, plan_id).state == "done"
        assert s.get(ReorgJob, plan_id).runs == ticks
        assert s.get(ReorgJob, plan_id).share == 0.5
        # as `govca reorg run`, the end of the plan publishes a full CRL of issuing
        assert s.execute(select(func.count()).select_from(PublishedCRL).join(
            CertificateAuthority).where(CertificateAuthority.name == "issuing",
                                        PublishedCRL.kind == "full")).scalar_one() >= 1
        assert s.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "reorg.run.stop",
            AuditEvent.target == f"reorg:{plan_id}")).scalar_one() == ticks


def test_time_budget_bounds_a_slice(db, small_world, preparer, operator, clock, sched,
                                    monkeypatch):
    monkeypatch.setattr(sched_mod, "REORG_SLICE_SECONDS", 0.0)
    plan_id = started_plan(db, preparer, operator, clock)
    # with no time left the tick runs nothing at all; the plan waits for the next one
    assert sched.run_job("reorg_worker") == {}
    monkeypatch.setattr(sched_mod, "REORG_SLICE_SECONDS", 0.005)
    out = sched.run_job("reorg_worker")
    assert out[plan_id]["processed"] == 1 and out[plan_id]["state"] == "running"
    # the executor's default (the CLI) still runs to the end
    r = executor.Runner(db, sched.jobs.svc.issuance(), clock, hsm_rate=HSM_RATE,
                        batch=5).run(plan_id)
    assert r.state == "done" and r.processed == r.total - 1
    check_end_state(db, plan_id, clock)


def test_paused_plan_is_not_touched(db, small_world, preparer, operator, clock, sched,
                                    monkeypatch):
    monkeypatch.setattr(sched_mod, "REORG_SLICE_ITEMS", 5)
    plan_id = started_plan(db, preparer, operator, clock)
    first = sched.run_job("reorg_worker")[plan_id]
    assert first["processed"] == 5
    control.pause(db, operator, plan_id, clock)
    _, before = counts(db, plan_id)
    with db.transaction() as s:
        runs = s.get(ReorgJob, plan_id).runs
    for _ in range(3):
        assert sched.run_job("reorg_worker") == {}
    state, after = counts(db, plan_id)
    assert state == "paused" and after == before
    with db.transaction() as s:
        assert s.get(ReorgJob, plan_id).runs == runs
    # an approved plan nobody started is not run either
    other = approved_plan(db, preparer, operator, clock, items=[
        {"kind": "merge_province", "sources": ["thainguyen"], "target": "tuyenquang"}])
    assert sched.run_job("reorg_worker") == {}
    with db.transaction() as s:
        assert s.get(ReorgJob, other) is None
    control.resume(db, operator, plan_id, clock)
    assert sched.run_job("reorg_worker")[plan_id]["processed"] == 5


def test_plan_leased_by_a_live_worker_is_not_touched(db, small_world, preparer, operator,
                                                     clock, sched, monkeypatch):
    import os
    import socket
    monkeypatch.setattr(sched_mod, "REORG_SLICE_ITEMS", 5)
    plan_id = started_plan(db, preparer, operator, clock)
    sched.run_job("reorg_worker")  # creates the job row, then releases the lease
    _, before = counts(db, plan_id)
    # `govca reorg run` in another live process (this test's parent: alive, not us)
    other = f"{socket.gethostname()}:{os.getppid()}:cli00000"
    until = clock.now() + dt.timedelta(seconds=executor.LEASE_SECONDS)
    with db.transaction() as s:
        s.execute(update(ReorgJob).where(ReorgJob.plan_id == plan_id).values(
            lease_owner=other, lease_until=until))
    assert sched.run_job("reorg_worker") == {plan_id: "busy"}
    _, after = counts(db, plan_id)
    assert after == before
    with db.transaction() as s:
        job = s.get(ReorgJob, plan_id)
        assert job.lease_owner == other
        assert s.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "reorg.run.takeover")).scalar_one() == 0
    # once that worker's lease expires (it stopped renewing), the leader carries on
    clock.advance(seconds=executor.LEASE_SECONDS + 1)
    r = sched.run_job("reorg_worker")[plan_id]
    assert r["processed"] == 5
    with db.transaction() as s:
        assert s.get(ReorgJob, plan_id).lease_owner is None


def test_follower_runs_nothing(db, small_world, preparer, operator, clock, sched, services):
    plan_id = started_plan(db, preparer, operator, clock)
    assert sched.lease.acquire()
    follower = Scheduler(build_jobs(services), Lease(db, clock, holder="follower"))
    assert follower.run_job("reorg_worker") is None
    with db.transaction() as s:
        assert s.get(ReorgJob, plan_id) is None
