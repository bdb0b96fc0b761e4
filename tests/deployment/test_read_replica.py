"""Read replicas (issue 8 point 4): GOVCA_READ_DATABASE_URL gives the reports a read-only
session on a replica, writes stay on the primary, an unreachable replica falls back to the
primary (one log line, no password), and a bad setting is refused at start with a clear message.

A second PostgreSQL database stands in for the replica: same schema, the same demo rows plus one
RA domain that the primary does not have, so a page shows which database it read."""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import subprocess
import time
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from ca.errors import ConfigurationError
from ca.ra.users import set_password
from ca.store.base import Base
from ca.store.database import Database, make_engine, make_read_engine
from ca.store.models import RaDomain
from ca.store.models_ra import RaUser
from ra_portal.settings import Settings
from tests.conftest import BACKEND, PG_URL, load_snapshot
from tests.serverkit import ROOT, free_port

REPLICA_ONLY = "Tỉnh Bản Sao (chỉ có trên bản sao)"
PASSWORD = "mat-khau-thu-nghiem-2026"
OPTION = re.compile(r'<option value="\d+"')


def _replica_url() -> str:
    url = make_url(PG_URL)
    return url.set(database=f"{url.database}_replica").render_as_string(hide_password=False)


@pytest.fixture
def replica(demo_snapshot):
    """The stand-in replica: its own PostgreSQL database with the demo rows and one extra RA
    domain. Yields its URL; the database is dropped afterwards."""
    if BACKEND != "postgresql":
        pytest.skip("a read replica needs PostgreSQL (run with GOVCA_TEST_BACKEND=postgresql)")
    url = _replica_url()
    name = make_url(url).database
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        if not c.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    engine = make_engine(url)
    with engine.begin() as c:
        Base.metadata.drop_all(c)
        Base.metadata.create_all(c)
    load_snapshot(engine, demo_snapshot)
    with engine.begin() as c:
        c.execute(insert(RaDomain).values(code="replica-only", name=REPLICA_ONLY, kind="province",
                                          locality=REPLICA_ONLY,
                                          created_at=dt.datetime.now(dt.timezone.utc)))
    yield url
    engine.dispose()
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")  # leave no database behind
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _app(settings, clock, key_store, **changes):
    from ra_portal import create_app
    app = create_app(dataclasses.replace(settings, **changes), clock=clock, testing=True)
    app.extensions["govca"]._keys = key_store
    return app


def _login(app, username: str):
    svc = app.extensions["govca"]
    with svc.db.transaction() as s:
        user = s.execute(select(RaUser).where(RaUser.username == username)).scalar_one()
        set_password(s, user, PASSWORD, actor="test", at=svc.clock.now())
        secret = user.totp_secret
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)
    otp = pyotp.TOTP(secret).at(svc.clock.now()) if secret else ""
    r = client.post("/login", data={"csrf_token": csrf, "username": username,
                                    "password": PASSWORD, "otp": otp})
    assert r.status_code == 302, r.get_data(as_text=True)[:500]
    return client


def _counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            return {t.name: c.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in Base.metadata.sorted_tables}
    finally:
        engine.dispose()


def _domain_count(db: Database) -> int:
    with db.transaction() as s:
        return s.execute(select(func.count()).select_from(RaDomain)).scalar_one()


# --- PostgreSQL: a second database as the replica ---------------------------------------------
@pytest.mark.postgres_only
def test_reports_read_the_replica_and_writes_stay_on_the_primary(db, settings, clock, key_store,
                                                                 replica):
    before = _counts(replica)
    primary_domains = _domain_count(db)
    app = _app(settings, clock, key_store, read_database_url=replica)
    try:
        svc = app.extensions["govca"]
        assert svc.db.read_engine is not None
        client = _login(app, "auditor")  # the login writes (password, audit): primary only
        page = client.get("/reports/")
        assert page.status_code == 200
        body = page.get_data(as_text=True)
        assert REPLICA_ONLY in body, "the report page did not read the replica"
        assert len(OPTION.findall(body)) == primary_domains + 1
        export = client.get("/reports/by_domain.csv")
        assert export.status_code == 200
        # A write through the services goes to the primary, never to the replica.
        with svc.db.transaction() as s:
            s.add(RaDomain(code="primary-only", name="Primary only", kind="province",
                           locality="Primary only", created_at=clock.now()))
        with svc.db.read_transaction() as s:
            names = set(s.execute(select(RaDomain.name)).scalars())
        assert REPLICA_ONLY in names and "Primary only" not in names
        # The session of read_transaction refuses writes (SET TRANSACTION READ ONLY).
        with pytest.raises(sa_exc.DBAPIError) as err:
            with svc.db.read_transaction() as s:
                s.execute(insert(RaDomain).values(code="x", name="x", kind="province",
                                                  locality="x", created_at=clock.now()))
        assert getattr(err.value.orig, "sqlstate", None) == "25006"  # read_only_sql_transaction
    finally:
        app.extensions["govca"].db.dispose()
    assert _counts(replica) == before, "something was written to the replica"
    assert _domain_count(db) == primary_domains + 1
    with db.transaction() as s:
        assert s.execute(select(RaDomain).where(RaDomain.code == "replica-only")).first() is None


@pytest.mark.postgres_only
def test_an_unreachable_replica_falls_back_to_the_primary(db, settings, clock, key_store, caplog):
    dead = f"postgresql+psycopg://govca:s3cret-replica-pw@127.0.0.1:{free_port()}/govca"
    primary_domains = _domain_count(db)
    app = _app(settings, clock, key_store, read_database_url=dead)
    try:
        client = _login(app, "auditor")
        caplog.set_level(logging.WARNING, logger="ca.store.database")
        page = client.get("/reports/")
        assert page.status_code == 200
        body = page.get_data(as_text=True)
        assert REPLICA_ONLY not in body and len(OPTION.findall(body)) == primary_domains
        warnings = [r.getMessage() for r in caplog.records if "read replica" in r.getMessage()]
        assert len(warnings) == 1, caplog.text
        assert "reading from the primary" in warnings[0] and "s3cret" not in caplog.text
        # Left alone for a while: the next page does not wait for the dead replica again.
        db2 = app.extensions["govca"].db
        assert db2.replica_engine() is None
        t = time.monotonic()
        assert client.get("/reports/").status_code == 200
        assert len([r for r in caplog.records if "read replica" in r.getMessage()]) == 1
        assert time.monotonic() - t < 30
    finally:
        app.extensions["govca"].db.dispose()


@pytest.mark.postgres_only
def test_an_unreachable_replica_without_a_lag_bound_falls_back_too(db, caplog):
    """No lag check first: the failure comes from opening the read session itself."""
    dead = f"postgresql+psycopg://govca:s3cret-replica-pw@127.0.0.1:{free_port()}/govca"
    rdb = Database(make_engine(PG_URL), make_read_engine(dead), read_max_lag=None)
    caplog.set_level(logging.WARNING, logger="ca.store.database")
    try:
        assert rdb.replica_engine() is rdb.read_engine  # not known to be down yet
        with rdb.read_transaction() as s:
            n = s.execute(select(func.count()).select_from(RaDomain)).scalar_one()
        assert n == _domain_count(db)
        assert rdb.replica_engine() is None  # left alone for replica_retry seconds
        assert "unavailable (OperationalError)" in caplog.text and "s3cret" not in caplog.text
    finally:
        rdb.dispose()


@pytest.mark.postgres_only
def test_a_lagging_replica_is_not_used_beyond_its_bound(db, replica):
    engine = make_engine(PG_URL)
    rdb = Database(engine, make_read_engine(replica), read_max_lag=5.0)
    try:
        assert rdb.replica_lag() == 0.0  # not a standby: nothing to replay
        assert rdb.replica_engine() is rdb.read_engine
        with rdb.read_transaction() as s:
            assert s.execute(select(RaDomain).where(RaDomain.code == "replica-only")).first()
        with rdb.read_transaction(replica=False) as s:  # the primary, asked for by name
            assert not s.execute(select(RaDomain).where(RaDomain.code == "replica-only")).first()
        # A lag measured above the bound (what a standby behind by a minute reports) sends the
        # reads to the primary; a caller with a looser bound still gets the replica.
        rdb._lag = (60.0, time.monotonic())
        assert rdb.replica_engine() is None
        with rdb.read_transaction() as s:
            assert not s.execute(select(RaDomain).where(RaDomain.code == "replica-only")).first()
        assert rdb.replica_engine(max_lag=120.0) is rdb.read_engine
    finally:
        rdb.read_engine.dispose()


# --- both backends: read-only sessions and the setting itself ----------------------------------
def test_read_transaction_is_read_only_and_sees_committed_rows(db, clock):
    n = _domain_count(db)
    with pytest.raises(sa_exc.DBAPIError):
        with db.read_transaction() as s:
            s.execute(insert(RaDomain).values(code="ro", name="ro", kind="province",
                                              locality="ro", created_at=clock.now()))
    assert _domain_count(db) == n
    with db.transaction() as s:
        s.add(RaDomain(code="rw", name="rw", kind="province", locality="rw",
                       created_at=clock.now()))
    with db.read_transaction() as s:
        assert s.execute(select(func.count()).select_from(RaDomain)).scalar_one() == n + 1
    if db.backend == "sqlite":  # the reader is its own engine: no BEGIN IMMEDIATE lock
        assert db._sqlite_reader is not None
        with db.read_transaction() as s, db.transaction() as w:
            s.execute(select(RaDomain.id)).first()
            w.add(RaDomain(code="rw2", name="rw2", kind="province", locality="rw2",
                           created_at=clock.now()))
    db.dispose()


PG = "postgresql+psycopg://govca@db-primary:5432/govca"


@pytest.mark.parametrize("primary, value, message", [
    (PG, "not a url at all", "is not a database URL"),
    (PG, "mysql://u:hunter2pw@replica/govca", "must be a PostgreSQL URL"),
    (PG, "sqlite:///tmp/x.db", "must be a PostgreSQL URL"),
    (PG, "postgresql+psycopg://govca:hunter2pw@replica:5432", "names no database"),
    ("sqlite:////tmp/govca.sqlite3", "postgresql+psycopg://govca:hunter2pw@replica/govca",
     "needs a PostgreSQL primary"),
])
def test_a_bad_replica_url_is_refused_at_start(tmp_path, primary, value, message):
    env = {"GOVCA_INSTANCE": str(tmp_path), "GOVCA_DATABASE_URL": primary,
           "GOVCA_READ_DATABASE_URL": value}
    with pytest.raises(ConfigurationError) as err:
        Settings.from_env(env)
    assert message in err.value.message and "hunter2pw" not in err.value.message
    assert err.value.field == "GOVCA_READ_DATABASE_URL"


def test_replica_settings(tmp_path):
    base = {"GOVCA_INSTANCE": str(tmp_path), "GOVCA_DATABASE_URL": PG}
    s = Settings.from_env(base)
    assert s.read_database_url is None and s.read_max_lag == 60.0
    s = Settings.from_env({**base, "GOVCA_READ_DATABASE_URL": " postgresql+psycopg://r@h/govca ",
                           "GOVCA_READ_DATABASE_MAX_LAG": "2.5"})
    assert s.read_database_url == "postgresql+psycopg://r@h/govca" and s.read_max_lag == 2.5
    for bad in ("abc", "-1", "1e9", "nan"):
        with pytest.raises(ConfigurationError, match="GOVCA_READ_DATABASE_MAX_LAG"):
            Settings.from_env({**base, "GOVCA_READ_DATABASE_MAX_LAG": bad})


def test_the_cli_refuses_a_bad_replica_url_in_one_line(tmp_path, hsm_config):
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVCA_")}
    env.update(GOVCA_INSTANCE=str(tmp_path), GOVCA_DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
               GOVCA_READ_DATABASE_URL="postgresql+psycopg://govca:hunter2pw@replica/govca",
               GOVCA_PKCS11_MODULE=hsm_config.module)
    r = subprocess.run([str(Path(ROOT) / ".venv" / "bin" / "govca"), "ca", "list"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "GOVCA_READ_DATABASE_URL needs a PostgreSQL primary" in r.stderr
    assert "Traceback" not in r.stderr and "hunter2pw" not in r.stderr + r.stdout
