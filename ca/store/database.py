"""Engine set-up per backend and the transaction context used by every service.

Dropped connections: PostgreSQL engines ping a pooled connection before handing it out
(pool_pre_ping), so a connection the server closed while it sat idle (restart, fail-over,
pg_terminate_backend) is replaced without anyone noticing. A connection lost in the middle of a
transaction surfaces as an OperationalError that `is_transient` recognises; the web edges answer
it with 503 and Retry-After, and `Database.run` retries a unit of work only when the failure
certainly came before COMMIT was sent (never one whose COMMIT may have reached the server).
SQLite waits `GOVCA_DB_BUSY_TIMEOUT` seconds (default 30) for a lock, then fails the same way.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_AFTER = 2  # seconds a client is told to wait (HTTP Retry-After) after a database outage


def busy_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("GOVCA_DB_BUSY_TIMEOUT", "30")))
    except ValueError:
        return 30.0


def make_engine(url: str, **kwargs) -> Engine:
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {}).setdefault("timeout", busy_timeout())
        engine = create_engine(url, **kwargs)
        configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if url.startswith("postgresql"):
        # Fail fast when the server is unreachable instead of hanging a worker.
        kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 5)
    return create_engine(url, **kwargs)


def is_transient(exc: BaseException) -> bool:
    """A database failure worth retrying later: lost connection, server shutting down or not
    accepting connections, SQLite busy/locked. Constraint violations and bad SQL are not."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        if type(exc.orig).__module__ == "sqlite3":
            # SQLite's OperationalError also covers bad SQL and missing tables: only a lock or
            # an unreadable file is transient.
            text = str(exc.orig).lower()
            return any(w in text for w in ("locked", "busy", "unable to open", "disk i/o"))
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or ""
        # 08: connection exception; 57P: operator intervention (admin shutdown, terminated);
        # 40001/40P01: serialization failure / deadlock (the transaction was rolled back).
        return code.startswith(("08", "57P")) or code in ("40001", "40P01")
    return isinstance(exc, sa_exc.TimeoutError)  # pool exhausted


def configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE: a writer takes the lock at the start of its
    transaction, so two writers queue (busy timeout) instead of failing on lock upgrade."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - driver callback
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout() * 1000)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - driver callback
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Hands out sessions; `transaction()` commits on success and rolls back on error."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._factory = sessionmaker(bind=engine, expire_on_commit=False)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self._factory()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        session = self._factory()
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    def run(self, work: Callable[[Session], T], *, attempts: int = 3,
            backoff: float = 0.2) -> T:
        """Run `work(session)` in one transaction, retrying a transient failure (at most
        `attempts` tries in all) only while it is certain that nothing was committed: an error
        raised by `work` itself (the transaction was rolled back with the connection) or by
        BEGIN. A failure during COMMIT is ambiguous (the server may have committed before the
        connection dropped) and is raised at once, never replayed blindly."""
        for attempt in range(1, attempts + 1):
            session = self._factory()
            committing = False
            try:
                session.begin()
                result = work(session)
                committing = True
                session.commit()
                return result
            except Exception as exc:
                with contextlib.suppress(Exception):
                    session.rollback()
                if committing or attempt == attempts or not is_transient(exc):
                    raise
                log.warning("database unavailable (%s), retry %d of %d", type(exc).__name__,
                            attempt, attempts - 1)
                time.sleep(backoff * attempt)
            finally:
                session.close()
        raise AssertionError("unreachable")  # pragma: no cover
