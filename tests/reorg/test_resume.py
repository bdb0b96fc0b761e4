"""Crash-safety in one process: a worker that dies at any point is resumed without doing
anything twice; pause, cancel, retry of failures; a plan edited after approval does not run."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from ca import audit
from ca.errors import Conflict
from ca.reorg import executor
from ca.reorg.plans import edit_plan
from ca.store.models import AuditEvent, Certificate
from ca.store.models_reorg import ReorgJob, ReorgPlan, ReorgWork
from tests.reorg.test_engine import MERGE, approved_plan, valid_certs


class Crash(BaseException):
    """Stands for SIGKILL: nothing of the worker's own clean-up runs."""


def crash_at(point: str, after: int = 1):
    seen = {"n": 0}

    def fault(p):
        if p == point:
            seen["n"] += 1
            if seen["n"] == after:
                raise Crash(point)
    return fault


def check_end_state(db, plan_id, clock):
    with db.transaction() as s:
        work = s.execute(select(ReorgWork).where(ReorgWork.plan_id == plan_id)).scalars().all()
        assert work and all(w.state == "done" for w in work)
        for w in work:
            valid = valid_certs(s, w.subscriber_id, clock.now())
            assert len(valid) == (1 if w.action == "change" else 0), w.subscriber_id
            if w.action == "change":
                assert valid[0].serial == w.new_serial
            old = s.execute(select(Certificate).where(
                Certificate.serial == w.old_serial)).scalar_one()
            assert old.revocation_reason == w.reason
            n = s.execute(select(func.count()).select_from(AuditEvent).where(
                AuditEvent.action == "cert.revoke",
                AuditEvent.target == f"issuing:{w.old_serial}")).scalar_one()
            assert n == 1
        assert s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.state == "reserved")).scalar_one() == 0
        assert not audit.verify_chain(s)


# The worker takes its items in batches of 5 (runner_for): the claim, the reservation, the
# issuance and the revocation points come once per batch, the signature once per certificate.
# Each crash falls in the second or third batch, the signature's in the middle of a batch.
@pytest.mark.parametrize("point, after", [
    ("after_structure", 1), ("after_claim", 3), ("after_reserve", 2), ("after_sign", 7),
    ("after_issue", 2), ("after_revoke", 3)])
def test_crash_anywhere_then_resume(db, small_world, preparer, operator, clock, runner_for,
                                    issuance, point, after):
    plan_id = approved_plan(db, preparer, operator, clock)
    fault = crash_at(point, after)
    if point in ("after_reserve", "after_sign"):  # inside the issuance cycle itself
        issuance.fault = fault
        first = runner_for()
    else:
        first = runner_for(fault=fault)
    with pytest.raises(Crash):
        first.run(plan_id)
    with db.transaction() as s:  # the crash came mid-way: some items done, some not
        states = set(s.execute(select(ReorgWork.state).where(
            ReorgWork.plan_id == plan_id)).scalars())
        assert point == "after_structure" or states == {"done", "issuing", "pending"} \
            or states == {"done", "issuing"}, states
    issuance.fault = lambda p: None
    # the dead worker's lease holds until it expires
    with pytest.raises(Conflict, match="another worker"):
        runner_for().run(plan_id)
    clock.advance(seconds=executor.LEASE_SECONDS + 1)
    result = runner_for().run(plan_id)
    assert result.state == "done" and result.failed == 0
    check_end_state(db, plan_id, clock)
    with db.transaction() as s:
        assert s.get(ReorgJob, plan_id).runs == 2


def test_pause_then_resume_and_cancel(db, small_world, preparer, operator, clock, runner_for):
    plan_id = approved_plan(db, preparer, operator, clock)

    def pause_after_first_batch(info):
        if info["done"] and info["state"] == "running":
            executor.pause(db, operator, plan_id, clock)
    r = runner_for(progress=pause_after_first_batch).run(plan_id)
    assert r.state == "paused" and 0 < r.done < r.total
    info = executor.progress(db, operator, plan_id, clock)
    assert info["state"] == "paused" and info["done"] == r.done
    # run again: resumes; then cancel after another batch
    def cancel_soon(info):
        if info["done"] > r.done and info["state"] == "running":
            executor.cancel(db, operator, plan_id, clock)
    r2 = runner_for(progress=cancel_soon).run(plan_id)
    assert r2.state == "cancelled"
    with db.transaction() as s:
        states = dict(s.execute(select(ReorgWork.state, func.count()).where(
            ReorgWork.plan_id == plan_id).group_by(ReorgWork.state)).all())
        assert states.get("cancelled", 0) > 0 and "issuing" not in states
        assert states["done"] > r.done
        # cancelled holders keep exactly their old, valid certificate
        for w in s.execute(select(ReorgWork).where(ReorgWork.state == "cancelled")).scalars():
            valid = valid_certs(s, w.subscriber_id, clock.now())
            assert [c.serial for c in valid] == [w.old_serial]
    with pytest.raises(Conflict):
        executor.pause(db, operator, plan_id, clock)


def test_failures_are_listed_and_retried(db, small_world, preparer, operator, clock,
                                         runner_for):
    plan_id = approved_plan(db, preparer, operator, clock)
    runner_for().run(plan_id)  # a first plan, done: Hà Giang is now part of Tuyên Quang
    plan2 = approved_plan(db, preparer, operator, clock, items=[
        {"kind": "merge_province", "sources": ["tuyenquang"], "target": "thainguyen"}])
    r = runner_for(fault=None)
    # Revoke one holder's certificate between the structure phase and its turn.
    def revoke_first(point):
        if point == "after_structure":
            with db.transaction() as s:
                w = s.execute(select(ReorgWork).where(ReorgWork.plan_id == plan2)
                              .order_by(ReorgWork.id)).scalars().first()
                serial = w.old_serial
            from ca.revocation import revoke
            revoke(db, clock, serial=serial, reason="keyCompromise", actor="test")
    r.fault = revoke_first
    result = r.run(plan2)
    assert result.failed == 1 and result.state == "done"
    fails = executor.failures(db, operator, plan2)
    assert len(fails) == 1 and "revoked meanwhile" in fails[0]["error"]
    executor.retry_failed(db, operator, plan2, clock)
    with db.transaction() as s:
        assert s.get(ReorgPlan, plan2).state == "paused"
    result = runner_for().run(plan2)
    assert result.failed == 1  # still revoked: it fails again, with the same clear reason


def test_plan_edited_after_approval_does_not_run(db, small_world, preparer, operator, clock,
                                                 runner_for):
    plan_id = approved_plan(db, preparer, operator, clock)
    with db.transaction() as s:
        edit_plan(s, preparer, plan_id, clock=clock, items=MERGE[:1])
    with pytest.raises(Conflict, match="not approved"):
        runner_for().run(plan_id)
    with db.transaction() as s:
        assert s.get(ReorgJob, plan_id) is None


def test_a_plan_cancelled_before_it_started_changes_nothing(db, small_world, preparer,
                                                            operator, clock, runner_for):
    plan_id = approved_plan(db, preparer, operator, clock)
    executor.cancel(db, operator, plan_id, clock)
    with db.transaction() as s:
        before = s.execute(select(func.count()).select_from(Certificate)).scalar_one()
    with pytest.raises(Conflict, match="cancelled before it started"):
        runner_for().run(plan_id)
    with db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Certificate)).scalar_one() == before
        assert s.get(ReorgJob, plan_id) is None
