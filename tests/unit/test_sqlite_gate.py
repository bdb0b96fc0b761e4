"""The SQLite writers' queue (ca/store/sqlite_gate.py): one writer at a time across threads and
processes, re-entrant in a thread, a timeout that lets the writer go on (SQLite's own lock
stays the authority), and no effect when its lock file cannot be made."""
from __future__ import annotations

import multiprocessing as mp
import threading
import time

from ca.store.sqlite_gate import WriterGate, gate_for


def test_one_writer_at_a_time_across_threads(tmp_path):
    gate = WriterGate(str(tmp_path / "db-writers"))
    inside, most, order = [0], [0], []
    lock = threading.Lock()

    def writer(i):
        for _ in range(20):
            assert gate.acquire(5)
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.0005)
            with lock:
                inside[0] -= 1
            order.append(i)
            gate.release()
    ts = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert most[0] == 1 and len(order) == 80


def test_reentrant_in_a_thread_and_timeout(tmp_path):
    gate = WriterGate(str(tmp_path / "db-writers"))
    assert gate.acquire(1) and gate.acquire(1)  # nested transaction of the same thread
    got = []
    t = threading.Thread(target=lambda: got.append(gate.acquire(0.05)))
    t.start()
    t.join()
    assert got == [False]  # another thread times out while it is held (and goes on)
    gate.release()
    gate.release()
    t = threading.Thread(target=lambda: got.append(gate.acquire(0.05)))
    t.start()
    t.join()
    assert got == [False, True]


def _hold(path, ready, done):
    gate = WriterGate(path)
    assert gate.acquire(5)
    ready.set()
    done.wait(10)
    gate.release()


def test_another_process_waits_for_the_holder(tmp_path):
    path = str(tmp_path / "db-writers")
    ctx = mp.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(path, ready, done))
    p.start()
    try:
        assert ready.wait(10)
        gate = WriterGate(path)
        assert gate.acquire(0.1) is False  # held by the other process
        done.set()
        assert gate.acquire(5) is True  # handed over once it lets go
        gate.release()
    finally:
        done.set()
        p.join(10)


def test_a_missing_folder_is_left_to_sqlite(tmp_path):
    gate = gate_for(str(tmp_path / "missing" / "dir" / "x.db"))
    with gate.held(1):  # no exception: the writer goes on without the queue
        pass
    assert gate.acquire(0.1) is None


def test_a_writer_that_waits_too_long_gets_database_is_locked(tmp_path, monkeypatch):
    from sqlalchemy import text
    from ca.store.database import Database, is_transient, make_engine
    monkeypatch.setenv("GOVCA_DB_BUSY_TIMEOUT", "0.2")
    db = Database(make_engine(f"sqlite:///{tmp_path / 'x.db'}"))
    with db.transaction() as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
    held, done, seen = threading.Event(), threading.Event(), []

    def long_writer():
        with db.transaction() as s:
            s.execute(text("INSERT INTO t VALUES (1)"))
            held.set()
            done.wait(5)
    t = threading.Thread(target=long_writer)
    t.start()
    try:
        assert held.wait(5)
        t0 = time.monotonic()
        try:
            with db.transaction() as s:
                s.execute(text("INSERT INTO t VALUES (2)"))
        except Exception as exc:  # noqa: BLE001 - the type is what is checked
            seen.append(exc)
        waited = time.monotonic() - t0
    finally:
        done.set()
        t.join(5)
    assert len(seen) == 1 and is_transient(seen[0]) and "locked" in str(seen[0])
    assert waited < 1.0  # one busy timeout, not two
    with db.transaction() as s:
        assert s.execute(text("SELECT x FROM t")).scalars().all() == [1]
    db.dispose()
