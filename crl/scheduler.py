"""Freshness jobs (CRLs, pre-signed OCSP answers, responder renewal) run by APScheduler under a
leader lease held in the database, so one process leads however many workers run."""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading

from sqlalchemy import exc as sa_exc
from sqlalchemy import delete, select

from ca.clock import Clock
from ca.owners import new_owner, owner_dead
from ca.store.database import Database
from ca.store.models_crl import SchedulerLease
from ca.store.models_ops import SchedulerRun
from crl.ocsp import OcspService, ocsp_settings
from crl.publish import CrlPublisher
from crl.responder import ResponderManager

log = logging.getLogger(__name__)
LEASE_NAME = "relying-party"
CHECKPOINT_INTERVAL = 600.0  # seconds between audit checkpoints (signed only when changed)
REMINDER_INTERVAL = 86400.0  # expiry reminders: daily
RUN_RETENTION = dt.timedelta(days=14)  # scheduler_run rows older than this are pruned
JOB_NAMES = ("renew_responders", "publish_crls", "refresh_ocsp", "audit_checkpoint",
             "expiry_reminders", "deliver_notices", "reorg_worker")
OUTBOX_INTERVAL = 60.0  # e-mail outbox retries (docs/notices.md)
# Reorganisation plans (docs/reorganisation.md): every REORG_INTERVAL the leader runs the
# plans in state 'running' for at most REORG_SLICE_SECONDS (REORG_SLICE_ITEMS items, None =
# no limit) in all, so the other jobs keep their schedule; the plan stays running between
# slices. Share of the HSM: GOVCA_REORG_SHARE (default 0.5); signing rate: GOVCA_REORG_HSM_RATE,
# else measured once per process.
REORG_INTERVAL = 5.0
REORG_SLICE_SECONDS = 20.0
REORG_SLICE_ITEMS: int | None = None
REORG_DEFAULT_SHARE = 0.5


class Lease:
    """A lease row: whoever holds an unexpired lease leads; the holder renews it on each job. A
    lease held by a dead process of this machine is taken over at once (ca.owners)."""

    def __init__(self, db: Database, clock: Clock, *, name: str = LEASE_NAME,
                 holder: str | None = None, ttl: dt.timedelta = dt.timedelta(seconds=90)) -> None:
        self.db, self.clock, self.name, self.ttl = db, clock, name, ttl
        self.holder = holder or new_owner()

    def acquire(self) -> bool:
        """Take or renew the lease; False when another holder's lease is still running."""
        now = self.clock.now()
        try:
            with self.db.transaction() as s:
                row = s.execute(select(SchedulerLease).where(SchedulerLease.name == self.name)
                                .with_for_update()).scalar_one_or_none()
                if row is None:
                    s.add(SchedulerLease(name=self.name, holder=self.holder,
                                         expires_at=now + self.ttl, acquired_at=now))
                    return True
                if (row.holder != self.holder and row.expires_at > now
                        and not owner_dead(row.holder)):
                    return False
                if row.holder != self.holder:
                    row.acquired_at = now
                    log.info("scheduler lease %s taken over by %s", self.name, self.holder)
                row.holder, row.expires_at = self.holder, now + self.ttl
                return True
        except sa_exc.IntegrityError:  # another process inserted the row first
            return False

    def release(self) -> None:
        with self.db.transaction() as s:
            row = s.get(SchedulerLease, self.name)
            if row is not None and row.holder == self.holder:
                row.expires_at = self.clock.now()


class RelyingPartyJobs:
    """The three jobs, each a no-op when nothing is due."""

    def __init__(self, publisher: CrlPublisher, ocsp: OcspService,
                 responders: ResponderManager) -> None:
        self.publisher, self.ocsp, self.responders = publisher, ocsp, responders
        self.svc = None  # the service container, for the audit checkpoint and reminders

    def renew_responders(self):
        renewed = [n for n, created in self.responders.ensure_all() if created]
        if renewed:
            self.ocsp.forget()
        return renewed

    def publish_crls(self):
        return self.publisher.publish_due()

    def refresh_ocsp(self):
        return self.ocsp.presign()

    def audit_checkpoint(self):
        """Sign the audit head if events were appended (leader only; None without a key)."""
        from ca.audit_checkpoint import checkpoint
        cp = checkpoint(self.svc)
        return None if cp is None else {"number": cp.number, "seq": cp.seq}

    def expiry_reminders(self):
        """The 30- and 7-day expiry reminders (no SMTP host configured: nothing sent)."""
        from ca.ra.notify import SmtpConfig, run_expiry_reminders
        return run_expiry_reminders(self.svc.db, self.svc.clock, SmtpConfig.from_env(os.environ))

    def deliver_notices(self):
        """Send the e-mail notices still waiting in the outbox (retries with back-off)."""
        from ca.ra.outbox import run_outbox
        return run_outbox(self.svc.db, self.svc.clock)

    _reorg_runner = None  # one Runner (one owner, one token bucket) per process

    def _reorg_worker_runner(self):
        from ca.reorg.executor import Runner
        if self._reorg_runner is None:
            env = os.environ
            try:
                share = float(env.get("GOVCA_REORG_SHARE") or REORG_DEFAULT_SHARE)
            except ValueError:
                share = REORG_DEFAULT_SHARE
            share = min(1.0, max(0.01, share))
            try:
                rate = float(env.get("GOVCA_REORG_HSM_RATE") or 0)
            except ValueError:
                rate = 0.0
            if rate <= 0:
                from ca.reorg.throttle import ca_sign_rate
                rate = ca_sign_rate(self.svc.db, self.svc.keys)
            self._reorg_runner = Runner(self.svc.db, self.svc.issuance(), self.svc.clock,
                                        hsm_rate=rate, share=share)
        return self._reorg_runner

    def reorg_due(self) -> bool:
        """Is a plan running? (A cheap look before the 5-second tick records a run.)"""
        from ca.store.models_reorg import ReorgPlan
        with self.svc.db.transaction() as s:
            return s.execute(select(ReorgPlan.id).where(ReorgPlan.state == "running")
                             .limit(1)).first() is not None

    def reorg_worker(self):
        """Run the reorganisation plans in state 'running' for one bounded slice (leader only).
        A plan whose lease another live worker holds (`govca reorg run`) is skipped: the
        executor's own lease decides; paused, cancelled and done plans are not touched."""
        import time
        from ca.errors import CAError, Conflict
        from ca.reorg.executor import LeaseLost
        from ca.store.models_reorg import ReorgPlan
        with self.svc.db.transaction() as s:
            plan_ids = list(s.execute(select(ReorgPlan.id).where(
                ReorgPlan.state == "running").order_by(ReorgPlan.id)).scalars())
        if not plan_ids:
            return {}
        runner = self._reorg_worker_runner()
        deadline = time.perf_counter() + REORG_SLICE_SECONDS
        out, failed = {}, None
        for plan_id in plan_ids:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                r = runner.run(plan_id, max_seconds=left, max_items=REORG_SLICE_ITEMS)
            except Conflict as exc:
                if exc.code != "busy":
                    log.warning("reorg worker: plan %s not run: %s", plan_id, exc.message)
                out[plan_id] = exc.code
                continue
            except LeaseLost:
                out[plan_id] = "lease_lost"
                continue
            except CAError as exc:
                log.warning("reorg worker: plan %s stopped: %s", plan_id, exc.message)
                out[plan_id] = exc.code
                continue
            except Exception as exc:  # noted on the job (last_error); the other plans go on
                log.exception("reorg worker: plan %s failed", plan_id)
                failed = failed or exc
                out[plan_id] = f"error: {type(exc).__name__}"
                continue
            out[plan_id] = {"state": r.state, "processed": r.processed, "done": r.done,
                            "failed": r.failed, "total": r.total}
            if r.state == "done" and r.processed:
                try:  # as `govca reorg run`: a fresh full CRL carries the plan's revocations
                    self.publisher.publish("issuing", "full")
                except Exception:  # the CRL job publishes on its own interval anyway
                    log.exception("reorg worker: CRL after plan %s not published", plan_id)
        if failed is not None:  # the run is recorded as failed; the next tick retries
            raise failed
        return out

    def run_once(self) -> dict:
        return {"responders": self.renew_responders(), "crls": self.publish_crls(),
                "ocsp": self.refresh_ocsp()}


def build_jobs(svc) -> RelyingPartyJobs:
    """From the composition root's service container (db, keys, clock, issuance, settings)."""
    publisher = CrlPublisher(svc.db, svc.keys, svc.clock, svc.settings.base_url)
    ocsp = OcspService(svc.db, svc.keys, svc.clock, ocsp_settings(svc))
    responders = ResponderManager(svc.db, svc.keys, svc.clock, svc.issuance)
    jobs = RelyingPartyJobs(publisher, ocsp, responders)
    jobs.svc = svc
    return jobs


def record_run(db: Database, clock: Clock, job: str, holder: str, fn):
    """Run `fn`, keeping a `scheduler_run` row (start, finish, ok, short message)."""
    try:
        with db.transaction() as s:
            row = SchedulerRun(job=job, holder=holder[:128], started_at=clock.now(), message="")
            s.add(row)
            s.flush()
            run_id = row.id
    except sa_exc.SQLAlchemyError as exc:  # the job matters more than its record
        log.warning("scheduler run of %s not recorded (%s)", job, type(exc).__name__)
        return fn()
    ok, message, result = False, "", None
    try:
        result = fn()
        ok, message = True, repr(result)[:500]
        return result
    except Exception as exc:
        message = f"{type(exc).__name__}: {str(exc)[:400]}"
        raise
    finally:
        try:
            with db.transaction() as s:
                row = s.get(SchedulerRun, run_id)
                row.finished_at, row.ok, row.message = clock.now(), ok, message
                s.execute(delete(SchedulerRun).where(SchedulerRun.job == job,
                                                     SchedulerRun.started_at < row.started_at
                                                     - RUN_RETENTION))
        except sa_exc.SQLAlchemyError as exc:
            log.warning("scheduler run of %s: result not recorded (%s)", job,
                        type(exc).__name__)


class Scheduler:
    """APScheduler with one job per task, each guarded by the lease."""

    def __init__(self, jobs: RelyingPartyJobs, lease: Lease, *, interval: float = 60.0) -> None:
        self.jobs, self.lease, self.interval = jobs, lease, interval
        self._sched = None
        self._guard = threading.Lock()

    def _guarded(self, name: str, fn):
        def run():
            with self._guard:  # one job at a time in this process
                if not self.lease.acquire():
                    return
                try:
                    record_run(self.lease.db, self.lease.clock, name, self.lease.holder, fn)
                except Exception:
                    log.exception("scheduler job %s failed", name)
        run.__name__ = name
        return run

    def _guarded_if_due(self, name: str, fn, due):
        """As _guarded, but an idle tick (due() false) records no `scheduler_run` row, so a
        5-second job does not fill the operations page when there is nothing to do."""
        guarded = self._guarded(name, fn)

        def run():
            try:
                if not due():
                    return
            except Exception:
                log.exception("scheduler job %s: could not check whether it is due", name)
                return
            guarded()
        run.__name__ = name
        return run

    def run_job(self, name: str):
        """Run one named job now, as the leader only, recorded in `scheduler_run`; None when
        another process leads."""
        if name not in JOB_NAMES:
            raise ValueError(f"unknown scheduler job {name!r}")
        if not self.lease.acquire():
            return None
        return record_run(self.lease.db, self.lease.clock, name, self.lease.holder,
                          getattr(self.jobs, name))

    def tick(self) -> dict | None:
        """One leader round of every job (also `govca scheduler --once`)."""
        if not self.lease.acquire():
            return None
        return self.jobs.run_once()

    def _add_jobs(self, sched) -> None:
        start = dt.datetime.now(dt.timezone.utc)
        for i, (name, fn) in enumerate((("renew_responders", self.jobs.renew_responders),
                                        ("publish_crls", self.jobs.publish_crls),
                                        ("refresh_ocsp", self.jobs.refresh_ocsp))):
            sched.add_job(self._guarded(name, fn), "interval", seconds=self.interval, id=name,
                          next_run_time=start + dt.timedelta(seconds=i), max_instances=1,
                          coalesce=True, misfire_grace_time=max(1, int(self.interval)))
        if getattr(self.jobs, "svc", None) is not None:
            for i, (name, every) in enumerate((("audit_checkpoint", CHECKPOINT_INTERVAL),
                                               ("expiry_reminders", REMINDER_INTERVAL),
                                               ("deliver_notices", OUTBOX_INTERVAL))):
                sched.add_job(self._guarded(name, getattr(self.jobs, name)), "interval",
                              seconds=every, id=name, max_instances=1, coalesce=True,
                              next_run_time=start + dt.timedelta(seconds=5 + i),
                              misfire_grace_time=max(1, int(self.interval)))
            sched.add_job(self._guarded_if_due("reorg_worker", self.jobs.reorg_worker,
                                               self.jobs.reorg_due), "interval",
                          seconds=REORG_INTERVAL, id="reorg_worker", max_instances=1,
                          coalesce=True, next_run_time=start + dt.timedelta(seconds=8),
                          misfire_grace_time=max(1, int(REORG_INTERVAL)))

    def start_background(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler
        self._sched = BackgroundScheduler(daemon=True, timezone="UTC")
        self._add_jobs(self._sched)
        self._sched.start()
        log.info("in-process scheduler started (holder %s)", self.lease.holder)

    def run_forever(self) -> None:
        from apscheduler.schedulers.blocking import BlockingScheduler
        self._sched = BlockingScheduler(timezone="UTC")
        self._add_jobs(self._sched)
        try:
            self._sched.start()
        finally:
            self.lease.release()

    def shutdown(self) -> None:
        if self._sched is not None and self._sched.running:
            self._sched.shutdown(wait=False)
        self.lease.release()


def interval_from_env(default: float = 60.0) -> float:
    try:
        return max(1.0, float(os.environ.get("GOVCA_SCHEDULER_INTERVAL", default)))
    except ValueError:
        return default
