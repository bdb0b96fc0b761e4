"""Freshness jobs (CRLs, pre-signed OCSP answers, responder renewal) run by APScheduler under a
leader lease held in the database, so one process leads however many workers run."""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid

from sqlalchemy import exc as sa_exc
from sqlalchemy import delete, select

from ca.clock import Clock
from ca.store.database import Database
from ca.store.models_crl import SchedulerLease
from ca.store.models_ops import SchedulerRun
from crl.ocsp import OcspService
from crl.publish import CrlPublisher
from crl.responder import ResponderManager

log = logging.getLogger(__name__)
LEASE_NAME = "relying-party"
CHECKPOINT_INTERVAL = 600.0  # seconds between audit checkpoints (signed only when changed)
REMINDER_INTERVAL = 86400.0  # expiry reminders: daily
RUN_RETENTION = dt.timedelta(days=14)  # scheduler_run rows older than this are pruned
JOB_NAMES = ("renew_responders", "publish_crls", "refresh_ocsp", "audit_checkpoint",
             "expiry_reminders")


class Lease:
    """A lease row: whoever holds an unexpired lease leads; the holder renews it on each job."""

    def __init__(self, db: Database, clock: Clock, *, name: str = LEASE_NAME,
                 holder: str | None = None, ttl: dt.timedelta = dt.timedelta(seconds=90)) -> None:
        self.db, self.clock, self.name, self.ttl = db, clock, name, ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

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
                if row.holder != self.holder and row.expires_at > now:
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

    def run_once(self) -> dict:
        return {"responders": self.renew_responders(), "crls": self.publish_crls(),
                "ocsp": self.refresh_ocsp()}


def build_jobs(svc) -> RelyingPartyJobs:
    """From the composition root's service container (db, keys, clock, issuance, settings)."""
    publisher = CrlPublisher(svc.db, svc.keys, svc.clock, svc.settings.base_url)
    ocsp = OcspService(svc.db, svc.keys, svc.clock)
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
                                               ("expiry_reminders", REMINDER_INTERVAL))):
                sched.add_job(self._guarded(name, getattr(self.jobs, name)), "interval",
                              seconds=every, id=name, max_instances=1, coalesce=True,
                              next_run_time=start + dt.timedelta(seconds=5 + i),
                              misfire_grace_time=max(1, int(self.interval)))

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
