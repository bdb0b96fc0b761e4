"""Controls of a plan's execution: start, pause, cancel, retry failures; progress and failures."""
from __future__ import annotations

from sqlalchemy import func, select, update

from ca import audit
from ca.clock import Clock
from ca.errors import Conflict
from ca.ra.roles import Caller
from ca.reorg import structure
from ca.reorg.plans import canonical_items, content_hash, get_plan
from ca.store.database import Database
from ca.store.models import Subscriber
from ca.store.models_reorg import ReorgJob, ReorgPlan, ReorgWork


def _control(db: Database, caller: Caller, plan_id, clock: Clock, action: str,
             allowed: tuple[str, ...], new_state: str) -> ReorgPlan:
    now = clock.now()
    with db.transaction() as s:
        plan = get_plan(s, caller, plan_id)
        caller.require("subscriber.write")
        if plan.state not in allowed:
            raise Conflict(f"plan {plan.id} is {plan.state}; cannot {action} it",
                           code="wrong_state")
        was = plan.state
        plan.state, plan.updated_at = new_state, now
        extra = {}
        if action == "cancel":
            extra["cancelled_items"] = s.execute(update(ReorgWork).where(
                ReorgWork.plan_id == plan.id, ReorgWork.state == "pending").values(
                    state="cancelled")).rowcount
        if action == "retry":
            extra["retried"] = s.execute(update(ReorgWork).where(
                ReorgWork.plan_id == plan.id, ReorgWork.state == "failed").values(
                    state="pending", error=None)).rowcount
            if not extra["retried"]:
                raise Conflict(f"plan {plan.id} has no failed items", code="nothing_failed")
            job = s.get(ReorgJob, plan.id)
            if job is not None:
                job.phase, job.finished_at = "certificates", None
        audit.record(s, f"reorg.plan.{action}", actor=caller.actor, at=now,
                     target=f"reorg:{plan.id}", domain_id=plan.domain_id,
                     details={"from": was, "to": new_state, **extra})
        return plan


def start(db: Database, caller: Caller, plan_id, clock: Clock) -> ReorgPlan:
    """Queue an approved (or paused) plan for the worker (`govca reorg run`, which also
    accepts an approved plan directly)."""
    with db.transaction() as s:
        plan = get_plan(s, caller, plan_id)
        if plan.state == "approved" and plan.approved_hash != content_hash(
                plan.name, plan.domain_id, canonical_items(s, plan.id)):
            raise Conflict(f"plan {plan.id} changed after its approval; it needs approval "
                           f"again", code="not_approved")
        if plan.state == "draft":
            raise Conflict(f"plan {plan.id} is not approved; a second person must approve it "
                           f"first", code="not_approved")
    return _control(db, caller, plan_id, clock, "start", ("approved", "paused"), "running")


def pause(db: Database, caller: Caller, plan_id, clock: Clock) -> ReorgPlan:
    return _control(db, caller, plan_id, clock, "pause", ("running",), "paused")


def resume(db: Database, caller: Caller, plan_id, clock: Clock) -> ReorgPlan:
    """Mark a paused plan runnable again (the worker, `govca reorg run`, picks it up)."""
    return _control(db, caller, plan_id, clock, "resume", ("paused",), "running")


def cancel(db: Database, caller: Caller, plan_id, clock: Clock) -> ReorgPlan:
    """Stop: items not started are cancelled (their holders keep their current certificate);
    an item in flight is finished by the worker, so nobody is left half-changed."""
    return _control(db, caller, plan_id, clock, "cancel",
                    ("draft", "approved", "running", "paused"), "cancelled")


def retry_failed(db: Database, caller: Caller, plan_id, clock: Clock) -> ReorgPlan:
    return _control(db, caller, plan_id, clock, "retry", ("done", "paused", "running"),
                    "paused")


def progress(db: Database, caller: Caller, plan_id, clock: Clock) -> dict:
    """Counters, rate and ETA for the progress page, the API and `status --follow`."""
    with db.transaction() as s:
        plan = get_plan(s, caller, plan_id)
        job = s.get(ReorgJob, plan.id)
        counts = structure.work_counts(s, plan.id)
        total = sum(counts.values())
        out = {"plan_id": plan.id, "state": plan.state, "total": total, **counts,
               "phase": job.phase if job else None, "eta_seconds": None, "rate": None,
               "worker": job.lease_owner if job else None,
               "heartbeat_at": job.heartbeat_at.isoformat() if job and job.heartbeat_at
               else None,
               "last_error": job.last_error if job else None,
               "share": job.share if job else None,
               "hsm_rate": job.hsm_rate if job else None}
        if job and job.started_at and counts["done"]:
            first_last = s.execute(select(func.min(ReorgWork.done_at),
                                          func.max(ReorgWork.done_at)).where(
                ReorgWork.plan_id == plan.id, ReorgWork.state == "done")).one()
            if first_last[0] and first_last[1] and first_last[1] > first_last[0]:
                span = (first_last[1] - first_last[0]).total_seconds()
                rate = counts["done"] / span
                out["rate"] = round(rate, 1)
                left = counts["pending"] + counts["issuing"]
                out["eta_seconds"] = round(left / rate, 1) if rate else None
        out["percent"] = round(100.0 * (counts["done"] + counts["failed"] + counts["cancelled"])
                               / total, 1) if total else (100.0 if plan.state == "done" else 0.0)
        return out


def failures(db: Database, caller: Caller, plan_id, limit: int = 500) -> list[dict]:
    with db.transaction() as s:
        plan = get_plan(s, caller, plan_id)
        rows = s.execute(select(ReorgWork).where(
            ReorgWork.plan_id == plan.id, ReorgWork.state == "failed")
            .order_by(ReorgWork.id).limit(limit)).scalars().all()
        names = dict(s.execute(select(Subscriber.id, Subscriber.full_name).where(
            Subscriber.id.in_([r.subscriber_id for r in rows]))).all()) if rows else {}
        return [{"work_id": r.id, "subscriber_id": r.subscriber_id,
                 "full_name": names.get(r.subscriber_id), "serial": r.old_serial,
                 "action": r.action, "attempts": r.attempts, "error": r.error} for r in rows]

