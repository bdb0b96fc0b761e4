"""A queue for SQLite writers that wakes the next one at once.

SQLite admits one writer at a time. A writer whose BEGIN IMMEDIATE finds the lock taken sleeps
in SQLite's busy handler for 1, 2, 5, 10, ... 100 ms between tries, and it does not notice when
the lock is released. Under load (two gunicorn workers, several threads each) the CPUs then sit
idle while writers sleep: the batch API measured 57-65 % busy on 2 cores (issue 8).

`WriterGate` queues the writers before they reach SQLite: the threads of a process on a lock
(woken by the releasing thread), the processes on an `flock` of `<database>-writers`, tried every
0.1-1 ms. SQLite's own lock stays the authority, so the gate changes only who waits where, never
what is allowed: a writer that does not get the gate within the busy timeout goes on to BEGIN
IMMEDIATE and waits there as before (and fails after the busy timeout as before). The gate is
re-entrant within a thread, so a nested transaction behaves as it did without it. When its
lock file cannot be opened (the database's folder is missing or read-only), writers go on
without it and SQLite reports the problem as before. (`Database.transaction` does not wait a
second busy timeout after the gate's: it answers "database is locked" at once.)
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator

_gates: dict[str, "WriterGate"] = {}
_gates_lock = threading.Lock()


class WriterGate:
    def __init__(self, path: str) -> None:
        self.path = path
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.RLock()  # threads of this process
        self._depth = 0  # re-entrant holds by the owning thread
        self._fd: int | None = None  # the flock (processes); one descriptor per process

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def acquire(self, timeout: float) -> bool | None:
        """True once this thread holds the gate; False after `timeout` seconds; None when its
        lock file cannot be opened (the caller goes on without it)."""
        if self._pid != os.getpid():  # forked: the parent's lock and descriptor are not ours
            self._reset()
        if not self._lock.acquire(timeout=timeout):
            return False
        if self._depth:
            self._depth += 1
            return True
        deadline = time.monotonic() + timeout
        delay = 0.0001
        try:
            try:
                fd = self._file()
            except OSError:  # no such folder, read-only: SQLite itself will say what is wrong
                self._lock.release()
                return None
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self._depth = 1
                    return True
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        self._lock.release()
                        return False
                    time.sleep(delay)
                    delay = min(delay * 2, 0.001)
        except BaseException:
            if not self._depth:
                self._lock.release()
            raise

    def release(self) -> None:
        if self._pid != os.getpid():  # acquired before a fork; the child never held it
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()

    @contextlib.contextmanager
    def held(self, timeout: float) -> Iterator[None]:
        got = self.acquire(timeout)
        try:
            yield
        finally:
            if got:
                self.release()


def gate_for(database_file: str) -> WriterGate:
    """The process's gate for a SQLite database file (one per file, shared by every engine)."""
    path = os.path.abspath(database_file) + "-writers"
    with _gates_lock:
        gate = _gates.get(path)
        if gate is None:
            gate = _gates[path] = WriterGate(path)
        return gate
