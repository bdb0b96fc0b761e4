"""Freshness: the leader lease, the scheduler's jobs, and CRL numbers under concurrent
publishers (PostgreSQL: two engines, as two processes would have)."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from ca.clock import FixedClock
from ca.store.database import Database, make_engine
from ca.store.models import CertificateAuthority
from ca.store.models_crl import OcspResponder, OcspResponse, PublishedCRL
from crl.publish import CrlPublisher
from crl.scheduler import Lease, Scheduler, build_jobs
from tests.conftest import PG_URL
from tests.crl.helpers import issue


def test_lease_has_one_holder_until_it_expires(db, clock):
    a = Lease(db, clock, holder="a", ttl=dt.timedelta(seconds=30))
    b = Lease(db, clock, holder="b", ttl=dt.timedelta(seconds=30))
    assert a.acquire() and not b.acquire()
    clock.advance(seconds=20)
    assert a.acquire() and not b.acquire()  # renewed
    clock.advance(seconds=31)
    assert b.acquire() and not a.acquire()  # a stopped renewing: b took over
    b.release()
    assert a.acquire()


def test_lease_of_a_dead_process_of_this_machine_is_taken_at_once(db, clock):
    """A crashed or killed leader (make run stopped with its lease running) does not leave
    CRLs and OCSP unrefreshed until its lease expires; a live holder, or one on another host,
    keeps its lease."""
    import os
    import socket
    import subprocess
    import sys
    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = Lease(db, clock, ttl=dt.timedelta(seconds=90))
        for holder, taken in ((f"{host}:{live.pid}:aaaa", False),
                              (f"elsewhere.example:{gone.pid}:bbbb", False),
                              (f"{host}:{gone.pid}:cccc", True)):
            other = Lease(db, clock, holder=holder, ttl=dt.timedelta(seconds=90))
            clock.advance(seconds=100)  # whoever held it before has expired
            assert other.acquire()
            assert me.acquire() is taken, holder
            if taken:
                assert not other.acquire()  # the new leader holds it now
            me.release()
    finally:
        live.kill()
        live.wait()
    assert me.holder.startswith(f"{host}:{os.getpid()}:")


def test_scheduler_round_issues_responders_publishes_and_presigns(services, clock):
    issue(services)
    sched = Scheduler(build_jobs(services), Lease(services.db, clock, holder="x"))
    first = sched.tick()
    assert sorted(first["responders"]) == ["issuing", "root"]
    assert {(c.ca, c.kind) for c in first["crls"]} == {("root", "full"), ("root", "delta"),
                                                       ("issuing", "full"),
                                                       ("issuing", "delta")}
    assert first["ocsp"] >= 2  # the leaf under issuing, the issuing CA under root
    again = sched.tick()
    assert again == {"responders": [], "crls": [], "ocsp": 0}
    # a follower does nothing
    assert Scheduler(build_jobs(services), Lease(services.db, clock, holder="y")).tick() is None
    # after the delta period: a delta; after the CRL interval: full + delta
    clock.advance(seconds=86400 // 12 + 1)
    assert [c.kind for c in sched.tick()["crls"]] == ["delta", "delta"]
    clock.advance(days=1)
    r = sched.tick()
    assert sorted(c.kind for c in r["crls"]) == ["delta", "delta", "full", "full"]
    assert r["ocsp"] >= 2  # pre-signed answers older than 8 h were refreshed
    # responders renewed before expiry, and answers re-signed by the new responder
    clock.advance(days=5)
    r = sched.tick()
    assert sorted(r["responders"]) == ["issuing", "root"]
    with services.db.transaction() as s:
        newest = s.execute(select(func.max(OcspResponder.id))).scalar_one()
        stale = s.execute(select(func.count(OcspResponse.id)).where(
            OcspResponse.responder_id < newest - 1)).scalar_one()
    assert stale == 0


def _publish_many(db, keys, clock, n, out, barrier):
    pub = CrlPublisher(db, keys, clock, "http://127.0.0.1:8080")
    barrier.wait()
    for _ in range(n):
        out.append(pub.publish("issuing", "full").crl_number)


def test_concurrent_publishers_never_share_a_number(services, clock):
    barrier = threading.Barrier(3)
    results: list[list[int]] = [[], [], []]
    threads = [threading.Thread(target=_publish_many, args=(
        services.db, services.keys, FixedClock(clock.now()), 4, results[i], barrier))
        for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    allnums = sorted(n for r in results for n in r)
    assert allnums == list(range(1, 13))
    for r in results:
        assert r == sorted(r)


@pytest.mark.postgres_only
def test_two_processes_worth_of_engines_on_postgresql(services, clock):
    """Two engines (separate pools, as two processes) publishing and taking the lease at once:
    CRL numbers stay unique and increasing; exactly one lease holder wins."""
    engines = [make_engine(PG_URL), make_engine(PG_URL)]
    try:
        dbs = [Database(e) for e in engines]
        barrier = threading.Barrier(2)
        results: list[list[int]] = [[], []]
        threads = [threading.Thread(target=_publish_many, args=(
            dbs[i], services.keys, FixedClock(clock.now()), 5, results[i], barrier))
            for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(results[0] + results[1]) == list(range(1, 11))
        with services.db.transaction() as s:
            ca_id = s.execute(select(CertificateAuthority.id).where(
                CertificateAuthority.name == "issuing")).scalar_one()
            rows = s.execute(select(PublishedCRL.crl_number, PublishedCRL.id).where(
                PublishedCRL.ca_id == ca_id).order_by(PublishedCRL.id)).all()
        assert [n for n, _ in rows] == sorted(n for n, _ in rows)  # row order == number order
        won: list[bool] = []
        gate = threading.Barrier(2)

        def take(d, name):
            gate.wait()
            won.append(Lease(d, clock, holder=name).acquire())
        ts = [threading.Thread(target=take, args=(dbs[i], f"p{i}")) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=30)
        assert sorted(won) == [False, True]
    finally:
        for e in engines:
            e.dispose()
