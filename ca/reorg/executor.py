"""The worker: runs an approved plan in batches, throttled, resumable.

Per work item (idempotent; a SIGKILL anywhere is safe), each step taken for a whole batch of items
at once (`Runner.process_many`: a few transactions per batch, not per item):
 1. claim it: state -> 'issuing', attempts + 1                       (transaction, the intent)
 2. if it was already 'issuing' (a worker died): look for the certificate that worker issued
    for this item (the intent audit of every certificate carries `reorg_work`); a serial that
    is still 'reserved' was never released and is abandoned
 3. otherwise issue: same key (reuse_key_serial), same expiry, the new subject
 4. revoke the old certificate (a second revocation is a Conflict, never a second record)
 5. state -> 'done' with the new serial                               (transaction)
Between 3 and 5 the holder briefly has two valid certificates; a resumed worker finishes 4.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update

from ca import audit
from ca.clock import Clock
from ca.errors import CAError, Conflict
from ca.issuance.service import IssuanceService, IssueRequest
from ca.owners import new_owner, owner_dead
from ca.ra.roles import Caller
from ca.reorg import structure
from ca.reorg.plans import canonical_items, content_hash, get_plan, items_of
from ca.reorg.throttle import TokenBucket
from ca.revocation import revoke_many
from ca.store.database import Database
from ca.store.models import AuditEvent, Certificate, CertificateAuthority
from ca.store.models_reorg import ReorgJob, ReorgPlan, ReorgWork

log = logging.getLogger(__name__)
LEASE_SECONDS = 30.0


class LeaseLost(CAError):
    code = "lease_lost"


@dataclass
class RunResult:
    plan_id: int
    state: str
    total: int
    done: int
    failed: int
    processed: int
    seconds: float
    signatures: int

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


Progress = Callable[[dict], None]


class Runner:
    def __init__(self, db: Database, issuance: IssuanceService, clock: Clock, *,
                 hsm_rate: float, share: float = 0.5, batch: int = 50, ca: str = "issuing",
                 actor: str = "system:reorg", owner: str | None = None,
                 lease_seconds: float = LEASE_SECONDS, progress: Progress | None = None,
                 fault: Callable[[str], None] | None = None) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        if batch < 1 or batch > 10000:
            raise ValueError("batch must be 1..10000")
        self.db, self.issuance, self.clock = db, issuance, clock
        self.hsm_rate, self.share, self.batch, self.ca = hsm_rate, share, batch, ca
        self.actor, self.owner = actor, owner or new_owner()
        self.lease = lease_seconds
        self.progress = progress or (lambda info: None)
        self.fault = fault or (lambda point: None)
        self.bucket = TokenBucket(max(hsm_rate * share, 0.1))
        self._item_seconds: float | None = None  # of the last batch (time-bounded slices)

    # -- lease -------------------------------------------------------------------------------
    def _lease_until(self):
        import datetime as dt
        return self.clock.now() + dt.timedelta(seconds=self.lease)

    def _start(self, plan_id: int) -> ReorgJob:
        now = self.clock.now()
        with self.db.transaction() as s:
            plan = get_plan(s, Caller.system("reorg"), plan_id)
            if plan.state in ("draft",):
                raise Conflict(f"plan {plan.id} is not approved; a second person must approve "
                               f"it first", code="not_approved")
            if plan.state == "done":
                raise Conflict(f"plan {plan.id} is done; nothing to run (retry-failed puts "
                               f"failed items back)", code="wrong_state")
            current = content_hash(plan.name, plan.domain_id, canonical_items(s, plan.id))
            job = s.get(ReorgJob, plan.id)
            structural = job is None or job.phase == "structure"
            if structural and plan.state == "cancelled":
                raise Conflict(f"plan {plan.id} was cancelled before it started; nothing to "
                               f"run", code="wrong_state")
            if structural and (plan.approved_hash is None or current != plan.approved_hash):
                raise Conflict(f"plan {plan.id} changed after its approval; it needs approval "
                               f"again", code="not_approved")
            if job is None:
                job = ReorgJob(plan_id=plan.id, phase="structure", share=self.share,
                               hsm_rate=self.hsm_rate, batch_size=self.batch, runs=0)
                s.add(job)
                s.flush()
            taken = s.execute(update(ReorgJob).where(
                ReorgJob.plan_id == plan.id,
                (ReorgJob.lease_owner.is_(None)) | (ReorgJob.lease_owner == self.owner)
                | (ReorgJob.lease_until < now)).values(
                    lease_owner=self.owner, lease_until=self._lease_until(),
                    heartbeat_at=now)).rowcount
            if not taken:
                s.refresh(job)
                if not owner_dead(job.lease_owner):
                    raise Conflict(f"another worker ({job.lease_owner}) runs plan {plan.id} "
                                   f"until {job.lease_until:%H:%M:%S}Z; wait or stop it",
                                   code="busy")
                s.execute(update(ReorgJob).where(ReorgJob.plan_id == plan.id).values(
                    lease_owner=self.owner, lease_until=self._lease_until(), heartbeat_at=now))
                audit.record(s, "reorg.run.takeover", actor=self.actor, at=now,
                             target=f"reorg:{plan.id}", domain_id=plan.domain_id,
                             details={"dead_owner": job.lease_owner, "owner": self.owner})
            s.refresh(job)
            resumed = job.runs > 0
            job.runs += 1
            job.share, job.hsm_rate, job.batch_size = self.share, self.hsm_rate, self.batch
            job.started_at = job.started_at or now
            if plan.state in ("approved", "paused"):
                plan.state = "running"
            plan.updated_at = now
            audit.record(s, "reorg.run.start", actor=self.actor, at=now,
                         target=f"reorg:{plan.id}", domain_id=plan.domain_id,
                         details={"owner": self.owner, "resumed": resumed, "run": job.runs,
                                  "share": self.share, "hsm_rate": round(self.hsm_rate, 1),
                                  "plan_state": plan.state})
            return job

    def _heartbeat(self, plan_id: int) -> str:
        """Extend the lease, refresh the counters; returns the plan's state (pause/cancel)."""
        now = self.clock.now()
        with self.db.transaction() as s:
            ok = s.execute(update(ReorgJob).where(
                ReorgJob.plan_id == plan_id, ReorgJob.lease_owner == self.owner).values(
                    lease_until=self._lease_until(), heartbeat_at=now)).rowcount
            if not ok:
                raise LeaseLost(f"the lease on plan {plan_id} was taken by another worker")
            counts = structure.work_counts(s, plan_id)
            job = s.get(ReorgJob, plan_id)
            job.done, job.failed = counts["done"], counts["failed"]
            job.total = sum(counts.values())
            state = s.get(ReorgPlan, plan_id).state
        self.progress({"plan_id": plan_id, "state": state, **counts,
                       "total": sum(counts.values())})
        return state

    def _release(self, plan_id: int) -> None:
        with self.db.transaction() as s:
            s.execute(update(ReorgJob).where(ReorgJob.plan_id == plan_id,
                                             ReorgJob.lease_owner == self.owner)
                      .values(lease_owner=None, lease_until=None))

    # -- the run -----------------------------------------------------------------------------
    def run(self, plan_id: int, *, max_seconds: float | None = None,
            max_items: int | None = None) -> RunResult:
        """Run the plan until it is done, paused or cancelled. With `max_seconds` and/or
        `max_items` (the scheduler's `reorg_worker` slices) it also stops, releasing the lease
        with the plan still running, once that much time has passed or that many items were
        processed (checked after each batch, and a batch is cut to what `max_items` leaves: a
        slice always makes progress); None = no limit."""
        t0 = time.perf_counter()
        job = self._start(plan_id)
        processed = signatures = 0

        def spent() -> bool:
            return ((max_items is not None and processed >= max_items)
                    or (max_seconds is not None and time.perf_counter() - t0 >= max_seconds))
        try:
            if job.phase == "structure":
                self._structure(plan_id)
            state = self._heartbeat(plan_id)
            while state == "running" or state == "cancelled":
                ids = self._next_batch(plan_id, only_in_flight=state == "cancelled")
                if not ids:
                    break
                ids = ids[:self._batch_size(processed, max_items,
                                            None if max_seconds is None else
                                            max_seconds - (time.perf_counter() - t0))]
                t_batch = time.perf_counter()
                signed = self.process_many(plan_id, ids)
                self._item_seconds = (time.perf_counter() - t_batch) / len(ids)
                processed += len(ids)
                signatures += signed
                state = self._heartbeat(plan_id)
                if state == "cancelled" and not self._next_batch(plan_id, True):
                    break
                if spent():
                    break
            final = self._finish(plan_id, state)
        except (CAError, Exception) as exc:
            if isinstance(exc, LeaseLost):
                raise
            self._note_error(plan_id, exc)
            self._release(plan_id)
            raise
        self._release(plan_id)
        with self.db.transaction() as s:
            job = s.get(ReorgJob, plan_id)
            total, done, failed = job.total, job.done, job.failed
        return RunResult(plan_id=plan_id, state=final, total=total, done=done, failed=failed,
                         processed=processed, seconds=time.perf_counter() - t0,
                         signatures=signatures)

    def _batch_size(self, processed: int, max_items: int | None, left: float | None) -> int:
        """How many items the next batch may take: `batch`, cut to what `max_items` leaves and,
        in a time-bounded slice, to what fits in the time left at the seconds per item of the
        last batch (the first batch of a runner takes one item, to measure); at least one."""
        n = self.batch
        if max_items is not None:
            n = min(n, max(1, max_items - processed))
        if left is not None:
            n = 1 if self._item_seconds is None else min(n, max(1, int(left / self._item_seconds)))
        return n

    def _note_error(self, plan_id: int, exc: BaseException) -> None:
        try:
            with self.db.transaction() as s:
                job = s.get(ReorgJob, plan_id)
                if job is not None:
                    job.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        except Exception:  # pragma: no cover - the database itself is gone
            log.exception("could not record the worker error")

    def _structure(self, plan_id: int) -> None:
        now = self.clock.now()
        with self.db.transaction() as s:
            job = s.get(ReorgJob, plan_id)
            if job.phase != "structure" or job.lease_owner != self.owner:
                return
            plan = s.get(ReorgPlan, plan_id)
            items = items_of(s, plan_id)
            total = structure.apply(s, plan, items, now=now, actor=self.actor)
            job.phase, job.total = "certificates", total
            audit.record(s, "reorg.apply", actor=self.actor, at=now, target=f"reorg:{plan_id}",
                         domain_id=plan.domain_id,
                         details={"items": len(items), "work_items": total,
                                  "hash": plan.content_hash})
        self.fault("after_structure")

    def _next_batch(self, plan_id: int, only_in_flight: bool = False) -> list[int]:
        states = ("issuing",) if only_in_flight else ("pending", "issuing")
        with self.db.transaction() as s:
            return list(s.execute(select(ReorgWork.id).where(
                ReorgWork.plan_id == plan_id, ReorgWork.state.in_(states))
                .order_by(ReorgWork.id).limit(self.batch)).scalars())

    def _finish(self, plan_id: int, state: str) -> str:
        now = self.clock.now()
        with self.db.transaction() as s:
            plan = s.get(ReorgPlan, plan_id)
            job = s.get(ReorgJob, plan_id)
            counts = structure.work_counts(s, plan_id)
            job.done, job.failed = counts["done"], counts["failed"]
            left = counts["pending"] + counts["issuing"]
            if plan.state == "running" and left == 0:
                plan.state, job.phase, job.finished_at = "done", "finished", now
            plan.updated_at = now
            audit.record(s, "reorg.run.stop", actor=self.actor, at=now,
                         target=f"reorg:{plan_id}", domain_id=plan.domain_id,
                         details={"plan_state": plan.state, **counts})
            return plan.state

    # -- the work items ----------------------------------------------------------------------
    def process_many(self, plan_id: int, work_ids: list[int]) -> int:
        """Carry out a batch of work items, each exactly as alone (module docstring), in a few
        transactions for the whole batch: one claims them all; one IssuanceService.issue_batch
        makes the new certificates (its own reserving and storing transactions); one
        revoke_many revokes the old ones; one marks them done. A refused item fails alone
        (reorg.item.failed) and the others go on. Returns the number of HSM signatures."""
        now = self.clock.now()
        with self.db.transaction() as s:
            work = {w.id: w for w in s.execute(select(ReorgWork).where(
                ReorgWork.id.in_(work_ids), ReorgWork.state.in_(("pending", "issuing"))))
                .scalars()}
            if not work:
                return 0
            resumed = {wid for wid, w in work.items() if w.state == "issuing"}
            claimed = set(s.execute(update(ReorgWork).where(
                ReorgWork.id.in_(list(work)), ReorgWork.state.in_(("pending", "issuing")))
                .values(state="issuing", attempts=ReorgWork.attempts + 1, claimed_at=now)
                .returning(ReorgWork.id)).scalars())
            items = [(wid, dict(action=w.action, reason=w.reason, profile=w.profile,
                                sub=w.subscriber_id, old=w.old_serial))
                     for wid, w in sorted(work.items()) if wid in claimed]
            olds = {row.serial: (row.id, row.spki_sha256, row.not_after, row.revoked_at,
                                 row.revocation_reason)
                    for row in s.execute(select(
                        Certificate.serial, Certificate.id, Certificate.spki_sha256,
                        Certificate.not_after, Certificate.revoked_at,
                        Certificate.revocation_reason).join(CertificateAuthority).where(
                        CertificateAuthority.name == self.ca,
                        Certificate.serial.in_([i["old"] for _w, i in items])))}
        self.fault("after_claim")
        signed = 0
        new_serial: dict[int, str | None] = {}  # work id -> its new certificate (None: revoke)
        to_issue: list[tuple[int, dict, tuple]] = []
        for wid, info in items:
            old_info = olds.get(info["old"])
            if old_info is None:
                self._failed(plan_id, wid, "not_found", "the old certificate is gone")
                continue
            if info["action"] != "change":
                new_serial[wid] = None
                continue
            found = self._find_issued(wid, info["sub"], old_info) if wid in resumed else None
            if found is not None:
                new_serial[wid] = found
            elif old_info[3] is not None:
                self._failed(plan_id, wid, "old_revoked", f"the old certificate was revoked "
                             f"meanwhile ({old_info[4]}); nothing to change")
            else:
                to_issue.append((wid, info, old_info))
        if to_issue:
            for _ in to_issue:  # one token per signature (take(n) waits for n at most burst)
                self.bucket.take()
            results = self.issuance.issue_batch([IssueRequest(
                ca=self.ca, profile=info["profile"], csr=None, actor=self.actor,
                subscriber_id=info["sub"], reuse_key_serial=info["old"],
                not_after=old_info[2], details={"reorg_plan": plan_id, "reorg_work": wid})
                for wid, info, old_info in to_issue])
            for (wid, _info, _old), result in zip(to_issue, results):
                if isinstance(result, CAError):
                    self._failed(plan_id, wid, result.code, result.message)
                else:
                    new_serial[wid] = result.serial
                    signed += 1
            if signed:
                self.fault("after_issue")
        info_of = dict(items)
        pending = [wid for wid, _info in items if wid in new_serial]
        revoked = revoke_many(self.db, self.clock, [
            (info_of[wid]["old"], info_of[wid]["reason"],
             {"reorg_plan": plan_id, "reorg_work": wid, "replaced_by": new_serial[wid]})
            for wid in pending], actor=self.actor, ca=self.ca) if pending else []
        done = []
        for wid, result in zip(pending, revoked):
            if isinstance(result, CAError) and not (isinstance(result, Conflict)
                                                    and result.code == "already_revoked"):
                self._failed(plan_id, wid, result.code, result.message)
            else:
                done.append(wid)
        if pending:
            self.fault("after_revoke")
        if done:
            at = self.clock.now()
            with self.db.transaction() as s:
                s.connection().execute(
                    update(ReorgWork.__table__).where(ReorgWork.__table__.c.id == bindparam("w"))
                    .values(state="done", new_serial=bindparam("n"), error=None, done_at=at),
                    [{"w": wid, "n": new_serial[wid]} for wid in done])
        return signed

    def _failed(self, plan_id: int, work_id: int, code: str, message: str) -> int:
        now = self.clock.now()
        with self.db.transaction() as s:
            w = s.get(ReorgWork, work_id)
            w.state, w.error = "failed", f"{code}: {message}"[:2000]
            plan = s.get(ReorgPlan, plan_id)
            audit.record(s, "reorg.item.failed", actor=self.actor, at=now,
                         target=f"subscriber:{w.subscriber_id}", domain_id=plan.domain_id,
                         details={"plan": plan_id, "work": work_id, "serial": w.old_serial,
                                  "error": code, "message": message})
        return 0

    def _find_issued(self, work_id: int, subscriber_id: int, old_info) -> str | None:
        """The certificate a dead worker issued for this item, if it was released. A serial of
        this item still 'reserved' was never released: abandon it (audited)."""
        old_id, spki = old_info[0], old_info[1]
        now = self.clock.now()
        found = None
        with self.db.transaction() as s:
            rows = s.execute(select(Certificate).join(CertificateAuthority).where(
                CertificateAuthority.name == self.ca, Certificate.subscriber_id == subscriber_id,
                Certificate.spki_sha256 == spki, Certificate.id > old_id,
                Certificate.state.in_(("issued", "reserved"))).order_by(Certificate.id)
            ).scalars().all()
            for row in rows:
                target = f"{self.ca}:{row.serial}"
                ev = s.execute(select(AuditEvent.details).where(
                    AuditEvent.target == target, AuditEvent.action == "cert.issue.intent")
                    .limit(1)).scalar_one_or_none()
                if ev is None or json.loads(ev).get("reorg_work") != work_id:
                    continue
                if row.state == "issued":
                    found = row.serial
                elif s.execute(update(Certificate).where(
                        Certificate.id == row.id, Certificate.state == "reserved").values(
                        state="abandoned", failure_reason="the reorganisation worker died "
                        "before storing it; the serial was never released")).rowcount:
                    audit.record(s, "cert.issue.abandoned", actor=self.actor, at=now,
                                 target=target, details={"reorg_work": work_id})
        return found


# The controls (start, pause, cancel, retry, progress, failures) live in ca.reorg.control;
# their old names here keep working.
from ca.reorg.control import (cancel, failures, pause, progress, resume, retry_failed,  # noqa: E402,F401
                              start)
