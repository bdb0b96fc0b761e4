"""Engine set-up per backend and the transaction context used by every service.

Dropped connections: PostgreSQL engines ping a pooled connection before handing it out
(pool_pre_ping), so a connection the server closed while it sat idle (restart, fail-over,
pg_terminate_backend) is replaced without anyone noticing. A connection lost in the middle of a
transaction surfaces as an OperationalError that `is_transient` recognises; the web edges answer
it with 503 and Retry-After, and `Database.run` retries a unit of work only when the failure
certainly came before COMMIT was sent (never one whose COMMIT may have reached the server).
SQLite waits `GOVCA_DB_BUSY_TIMEOUT` seconds (default 30) for a lock, then fails the same way.

Read replicas (issue 8 point 4): `Database.read_transaction()` hands out a read-only session for
work that tolerates replication lag (the reports). It uses the read engine
(`GOVCA_READ_DATABASE_URL`, a PostgreSQL streaming replica) when one is configured, reachable and
not lagging more than the caller allows, and the primary otherwise, always READ ONLY. A replica
that cannot be reached is left alone for `replica_retry` seconds (one log line), so a dead
replica costs one connection timeout, not one per request. On SQLite the read engine is the same
database file opened with `PRAGMA query_only` and without the writers' BEGIN IMMEDIATE.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_AFTER = 2  # seconds a client is told to wait (HTTP Retry-After) after a database outage


def busy_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("GOVCA_DB_BUSY_TIMEOUT", "30")))
    except ValueError:
        return 30.0


def sqlite_cache_mib() -> int:
    """SQLite's page cache per connection, MiB (GOVCA_SQLITE_CACHE_MIB, default 2, about
    SQLite's own default): taken as pages are read and kept, so a process holds up to this much
    per pooled connection once the database outgrows it. A database of a million certificates
    issues ≈ 5 % faster with 256, at the price of up to 256 MiB per connection
    (docs/performance-scale.md §1 and §2)."""
    try:
        return min(4096, max(1, int(os.environ.get("GOVCA_SQLITE_CACHE_MIB", "2"))))
    except ValueError:
        return 2


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


def make_read_engine(url: str, **kwargs) -> Engine:
    """An engine for a read replica: fails fast (3 s) when the replica cannot be reached, so
    the caller falls back to the primary quickly."""
    kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 3)
    return make_engine(url, **kwargs)


def safe_url(url) -> str:
    """A database URL for logs and messages: never the password."""
    try:
        return make_url(str(url)).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - unparsable: say nothing about it
        return "(unparsable URL)"


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
        # A page cache of up to GOVCA_SQLITE_CACHE_MIB (SQLite's default is 2 MiB): with a
        # million certificates the duplicate-key and insert index pages miss a small cache
        # (docs/performance-scale.md). Memory is taken only as pages are read, per connection.
        cur.execute(f"PRAGMA cache_size=-{sqlite_cache_mib() * 1024}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - driver callback
        conn.exec_driver_sql("BEGIN IMMEDIATE")


IN_CHUNK = 500  # values per IN (...) list: well under SQLite's and PostgreSQL's bind limits


def in_chunks(values) -> list[list]:
    """`values` cut into lists of at most IN_CHUNK, one per `column.in_(...)` query."""
    values = list(values)
    return [values[k:k + IN_CHUNK] for k in range(0, len(values), IN_CHUNK)]


def next_ids(session: Session, table, n: int) -> list[int] | None:
    """On SQLite, the ids the next `n` rows of `table` will get, for a writing transaction to
    insert them with one executemany: SQLite cannot say which RETURNING row belongs to which
    parameter set, so SQLAlchemy would otherwise insert them one statement at a time. The
    writer holds SQLite's lock from BEGIN IMMEDIATE, so nobody else inserts meanwhile, and
    max(id) + 1 is what SQLite itself would pick (no AUTOINCREMENT; rows of these tables are
    never deleted). None elsewhere: PostgreSQL batches RETURNING in parameter order."""
    if session.get_bind().dialect.name != "sqlite" or n <= 0:
        return None
    top = session.execute(select(func.max(table.c.id))).scalar() or 0
    return list(range(top + 1, top + 1 + n))


def _writer_gate(engine: Engine):
    """The writers' queue of a SQLite database file, or None (PostgreSQL, in-memory)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    from ca.store.sqlite_gate import gate_for
    return gate_for(database)


def sqlite_reader(url) -> Engine:
    """A read-only engine on a SQLite file: `PRAGMA query_only` refuses every write, and a plain
    (deferred) BEGIN takes no write lock, so in WAL mode a long report never blocks a writer."""
    engine = create_engine(url, connect_args={"timeout": busy_timeout()})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - driver callback
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout() * 1000)}")
        cur.execute("PRAGMA query_only=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - driver callback
        conn.exec_driver_sql("BEGIN")

    return engine


# Replay lag of a PostgreSQL standby in seconds: 0 on a primary, 0 when everything received has
# been replayed, otherwise the age of the last replayed commit. (A standby cut off from its
# primary has nothing unreplayed and so reports 0: watch pg_stat_replication for that.)
LAG_SQL = text(
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 "
    "WHEN pg_last_wal_receive_lsn() IS NOT NULL "
    "AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END")


class Database:
    """Hands out sessions; `transaction()` commits on success and rolls back on error;
    `read_transaction()` gives a read-only session, on the read replica when there is one."""

    def __init__(self, engine: Engine, read_engine: Engine | None = None, *,
                 read_max_lag: float | None = None, replica_retry: float = 30.0,
                 lag_cache: float = 1.0) -> None:
        self.engine = engine
        self._factory = sessionmaker(bind=engine, expire_on_commit=False)
        self.read_engine = read_engine  # the replica (PostgreSQL), or None
        self.read_max_lag = read_max_lag  # default bound for read_transaction (None: any lag)
        self.replica_retry = replica_retry
        self._lag_cache = lag_cache
        self._replica_down_until = 0.0
        self._lag: tuple[float, float] | None = None  # (lag seconds, monotonic time measured)
        self._sqlite_reader: Engine | None = None
        self._read_lock = threading.Lock()
        self._gate = _writer_gate(engine)  # SQLite file: writers queue here (sqlite_gate.py)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self._factory()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._writer():
            session = self._factory()
            try:
                with session.begin():
                    yield session
            finally:
                session.close()

    @contextlib.contextmanager
    def _writer(self) -> Iterator[None]:
        """The SQLite writers' queue (sqlite_gate.py), held for a whole transaction; nothing on
        PostgreSQL or an in-memory database. After GOVCA_DB_BUSY_TIMEOUT seconds in the queue
        the answer is SQLite's own "database is locked" (transient: 503), not a second wait."""
        if self._gate is None:
            yield
            return
        got = self._gate.acquire(busy_timeout())
        if got is False:
            import sqlite3
            raise sa_exc.OperationalError(
                "BEGIN IMMEDIATE", None, sqlite3.OperationalError(
                    "database is locked (another writer held it longer than "
                    "GOVCA_DB_BUSY_TIMEOUT)"))
        try:
            yield
        finally:
            if got:
                self._gate.release()

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction that only reads, on the primary (current data, no lag). On a SQLite
        file it is a deferred, query-only transaction: it takes no writer lock, so in WAL mode
        it runs beside the writer instead of queueing behind it. Elsewhere it is an ordinary
        transaction."""
        if self._gate is None:
            with self.transaction() as s:
                yield s
        else:
            with self.read_transaction(replica=False) as s:
                yield s

    @contextlib.contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A Core connection for a plain read on the primary, with what `read()` promises (on
        a SQLite file the query-only reader beside the writer; elsewhere the primary) but
        without an ORM session around it: for the hot paths that run one prepared statement
        per request (the API token check). The transaction ends with the block."""
        with self._primary_reader().connect() as conn:
            yield conn

    # -- reads that tolerate replication lag ------------------------------------------------
    @contextlib.contextmanager
    def read_transaction(self, max_lag: float | None = None, *,
                         replica: bool = True) -> Iterator[Session]:
        """A read-only session (SET TRANSACTION READ ONLY; `PRAGMA query_only` on SQLite) on the
        replica when it is configured, reachable and at most `max_lag` seconds behind (default
        `read_max_lag`; None: any lag), else on the primary. `replica=False`: the primary,
        read-only. Writing through it fails."""
        session = None
        engine = self.replica_engine(max_lag) if replica else None
        if engine is not None:
            try:
                session = self._open_read(engine)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.replica_failed(exc)
        if session is None:
            session = self._open_read(self._primary_reader())
        try:
            yield session
            session.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                session.rollback()
            raise
        finally:
            session.close()

    def replica_engine(self, max_lag: float | None = None) -> Engine | None:
        """The replica engine if it may be used now (configured, not known to be down, lag
        within `max_lag` or `read_max_lag`), else None: read from the primary. For readers that
        use Core connections (e.g. the OCSP status reads)."""
        if self.read_engine is None or time.monotonic() < self._replica_down_until:
            return None
        bound = self.read_max_lag if max_lag is None else max_lag
        if bound is None:
            return self.read_engine
        try:
            lag = self.replica_lag()
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.replica_failed(exc)
            return None
        if lag > bound:
            log.warning("read replica %.1f s behind (limit %.1f s): reading from the primary",
                        lag, bound)
            return None
        return self.read_engine

    def replica_lag(self) -> float:
        """Seconds the replica's replay is behind (cached `lag_cache` seconds); 0.0 without a
        replica."""
        if self.read_engine is None:
            return 0.0
        t = time.monotonic()
        cached = self._lag
        if cached is not None and t - cached[1] < self._lag_cache:
            return cached[0]
        with self.read_engine.connect() as conn:
            lag = float(conn.execute(LAG_SQL).scalar() or 0.0)
        self._lag = (max(0.0, lag), t)
        return self._lag[0]

    def replica_failed(self, exc: BaseException) -> None:
        """Note that the replica failed (a transient error): it is left alone, and reads go to
        the primary, for `replica_retry` seconds. One log line per outage, without the URL's
        password or the driver's message."""
        with self._read_lock:
            if time.monotonic() < self._replica_down_until:
                return
            self._replica_down_until = time.monotonic() + self.replica_retry
        # The exception type only: its text may carry the URL of the replica.
        log.warning("read replica %s unavailable (%s): reading from the primary for %.0f s",
                    safe_url(self.read_engine.url), type(exc).__name__, self.replica_retry)

    def _primary_reader(self) -> Engine:
        if self.engine.dialect.name != "sqlite":
            return self.engine
        database = self.engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return self.engine  # one in-memory database: there is no second connection to it
        with self._read_lock:
            if self._sqlite_reader is None:
                self._sqlite_reader = sqlite_reader(self.engine.url)
            return self._sqlite_reader

    @staticmethod
    def _open_read(engine: Engine) -> Session:
        session = Session(bind=engine, expire_on_commit=False)
        try:
            session.begin()
            conn = session.connection()  # connects (and fails here when the server is down)
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            return session
        except BaseException:
            with contextlib.suppress(Exception):
                session.close()
            raise

    def dispose(self) -> None:
        """Close every pooled connection (primary, replica, SQLite reader)."""
        self.engine.dispose()
        if self.read_engine is not None:
            self.read_engine.dispose()
        if self._sqlite_reader is not None:
            self._sqlite_reader.dispose()

    def run(self, work: Callable[[Session], T], *, attempts: int = 3,
            backoff: float = 0.2) -> T:
        """Run `work(session)` in one transaction, retrying a transient failure (at most
        `attempts` tries in all) only while it is certain that nothing was committed: an error
        raised by `work` itself (the transaction was rolled back with the connection) or by
        BEGIN. A failure during COMMIT is ambiguous (the server may have committed before the
        connection dropped) and is raised at once, never replayed blindly."""
        for attempt in range(1, attempts + 1):
            with self._writer():
                result, failure = self._run_once(work)
            if failure is None:
                return result
            committing, exc = failure
            if committing or attempt == attempts or not is_transient(exc):
                raise exc
            log.warning("database unavailable (%s), retry %d of %d", type(exc).__name__,
                        attempt, attempts - 1)
            time.sleep(backoff * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _run_once(self, work):
        """One try of `run`: (result, None), or (None, (whether COMMIT was sent, error))."""
        session = self._factory()
        committing = False
        try:
            session.begin()
            result = work(session)
            committing = True
            session.commit()
            return result, None
        except Exception as exc:
            with contextlib.suppress(Exception):
                session.rollback()
            return None, (committing, exc)
        finally:
            session.close()
