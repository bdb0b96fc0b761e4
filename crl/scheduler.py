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
from sqlalchemy import select

from ca.clock import Clock
from ca.store.database import Database
from ca.store.models_crl import SchedulerLease
from crl.ocsp import OcspService
from crl.publish import CrlPublisher
from crl.responder import ResponderManager

log = logging.getLogger(__name__)
LEASE_NAME = "relying-party"


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

    def renew_responders(self):
        renewed = [n for n, created in self.responders.ensure_all() if created]
        if renewed:
            self.ocsp.forget()
        return renewed

    def publish_crls(self):
        return self.publisher.publish_due()

    def refresh_ocsp(self):
        return self.ocsp.presign()

    def run_once(self) -> dict:
        return {"responders": self.renew_responders(), "crls": self.publish_crls(),
                "ocsp": self.refresh_ocsp()}


def build_jobs(svc) -> RelyingPartyJobs:
    """From the composition root's service container (db, keys, clock, issuance, settings)."""
    publisher = CrlPublisher(svc.db, svc.keys, svc.clock, svc.settings.base_url)
    ocsp = OcspService(svc.db, svc.keys, svc.clock)
    responders = ResponderManager(svc.db, svc.keys, svc.clock, svc.issuance)
    return RelyingPartyJobs(publisher, ocsp, responders)


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
                    fn()
                except Exception:
                    log.exception("scheduler job %s failed", name)
        run.__name__ = name
        return run

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
