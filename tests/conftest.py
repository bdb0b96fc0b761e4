"""Shared fixtures: one SoftHSM token per test session, a fresh database per test (SQLite or
PostgreSQL per GOVCA_TEST_BACKEND), a fixed clock, and a demo PKI snapshot loaded into each test
database so that tests do not pay for key ceremonies."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# SoftHSM reads SOFTHSM2_CONF when the module is initialised: set it before anything loads it.
_TMP = Path(tempfile.mkdtemp(prefix="govca-test-"))
_TOKENS = _TMP / "tokens"
_TOKENS.mkdir()
(_TMP / "softhsm2.conf").write_text(f"directories.tokendir = {_TOKENS}\nobjectstore.backend = file\n"
                                    "log.level = ERROR\n")
os.environ["SOFTHSM2_CONF"] = str(_TMP / "softhsm2.conf")
TOKEN_LABEL = "govca-test"
USER_PIN = "246813579"
SO_PIN = "9753186420"

from sqlalchemy import MetaData, create_engine, insert, select, text  # noqa: E402

from ca.clock import FixedClock  # noqa: E402
from ca.profiles import builtin_profiles  # noqa: E402
from ca.store import schema  # noqa: E402,F401
from ca.store.base import Base  # noqa: E402
from ca.store.database import Database, make_engine  # noqa: E402
from hsm.config import HsmConfig, find_softhsm  # noqa: E402

BACKEND = os.environ.get("GOVCA_TEST_BACKEND", "sqlite")
PG_URL = os.environ.get("GOVCA_TEST_DATABASE_URL")
# In the past, so that independent tools checking at the real time accept our certificates.
NOW = dt.datetime(2026, 6, 1, 8, 0, 0, tzinfo=dt.timezone.utc)


def pytest_report_header(config):
    return f"GovCA test backend: {BACKEND}; SoftHSM dir {_TMP}"


def pytest_collection_modifyitems(config, items):
    if BACKEND == "postgresql" and not PG_URL:
        raise pytest.UsageError("GOVCA_TEST_BACKEND=postgresql needs GOVCA_TEST_DATABASE_URL")
    for item in items:
        if "postgres_only" in item.keywords and BACKEND != "postgresql":
            item.add_marker(pytest.mark.skip(reason="PostgreSQL-only test (run with "
                                                    "GOVCA_TEST_BACKEND=postgresql)"))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TMP, ignore_errors=True)


# --- HSM -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def softhsm_module() -> str:
    module = find_softhsm()
    if module is None:
        pytest.fail("SoftHSM 2 is not installed (make test installs it)")
    return module


@pytest.fixture(scope="session")
def hsm_config(softhsm_module) -> HsmConfig:
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL,
                    "--pin", USER_PIN, "--so-pin", SO_PIN], check=True, capture_output=True)
    pin_file = _TMP / "user-pin"
    pin_file.write_text(USER_PIN)
    return HsmConfig(module=softhsm_module, token_label=TOKEN_LABEL, pin_file=pin_file,
                     softhsm_conf=_TMP / "softhsm2.conf", pool_size=4)


@pytest.fixture(scope="session")
def key_store(hsm_config):
    from hsm.store import HsmKeyStore
    store = HsmKeyStore(hsm_config)
    yield store
    store.close()


# --- database --------------------------------------------------------------------------------
_pg_engine = None


def _pg():
    global _pg_engine
    if _pg_engine is None:
        _pg_engine = make_engine(PG_URL)
        with _pg_engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
            Base.metadata.create_all(conn)
    return _pg_engine


def _truncate_pg(engine) -> None:
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


def fresh_engine(tmp_path: Path):
    """An engine on an empty database with the current schema."""
    if BACKEND == "postgresql":
        engine = _pg()
        _truncate_pg(engine)
        return engine
    engine = make_engine(f"sqlite:///{tmp_path / 'test.sqlite3'}")
    Base.metadata.create_all(engine)
    return engine


def database_url(tmp_path: Path) -> str:
    return PG_URL if BACKEND == "postgresql" else f"sqlite:///{tmp_path / 'test.sqlite3'}"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def empty_db(tmp_path) -> Database:
    """A database with the schema and no rows."""
    engine = fresh_engine(tmp_path)
    yield Database(engine)
    if BACKEND != "postgresql":
        engine.dispose()


# --- the demo PKI snapshot -------------------------------------------------------------------
@pytest.fixture(scope="session")
def profiles():
    return builtin_profiles()


@pytest.fixture(scope="session")
def demo_snapshot(tmp_path_factory, key_store, hsm_config, profiles):
    """Run the demo initialisation once (key ceremonies in the session's token) and keep every
    row, to be copied into each test's database."""
    from ra_portal.demo import init_demo
    from ra_portal.settings import Settings
    from ra_portal.wiring import Services
    d = tmp_path_factory.mktemp("snapshot")
    engine = make_engine(f"sqlite:///{d / 'snap.sqlite3'}")
    Base.metadata.create_all(engine)
    settings = Settings(instance=d, database_url=str(engine.url), base_url="http://127.0.0.1:8080",
                        secret_key_file=d / "secret", listen="127.0.0.1:8080",
                        profiles_file=d / "profiles.json", hsm=hsm_config)
    svc = Services(settings=settings, db=Database(engine), clock=FixedClock(NOW - dt.timedelta(days=1)),
                   profiles=profiles, _keys=key_store)
    init_demo(svc, echo=lambda *a, **k: None)
    snapshot: dict[str, list[dict]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            snapshot[table.name] = [dict(r._mapping) for r in conn.execute(select(table))]
    engine.dispose()
    return snapshot


def load_snapshot(engine, snapshot) -> None:
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            rows = snapshot.get(table.name)
            if rows:
                conn.execute(insert(table), rows)
        if engine.dialect.name == "postgresql":
            for table in Base.metadata.sorted_tables:
                if "id" in table.c and snapshot.get(table.name):
                    conn.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', 'id'), "
                        f"(SELECT MAX(id) FROM \"{table.name}\"))"))


@pytest.fixture
def db(tmp_path, demo_snapshot) -> Database:
    """A database holding the demo PKI (root + issuing CA in the session token) and demo data."""
    engine = fresh_engine(tmp_path)
    load_snapshot(engine, demo_snapshot)
    yield Database(engine)
    if BACKEND != "postgresql":
        engine.dispose()


@pytest.fixture
def settings(tmp_path, hsm_config):
    from ra_portal.settings import Settings
    return Settings(instance=tmp_path, database_url=database_url(tmp_path),
                    base_url="http://127.0.0.1:8080", secret_key_file=tmp_path / "secret-key",
                    listen="127.0.0.1:8080", profiles_file=tmp_path / "profiles.json",
                    hsm=hsm_config)


@pytest.fixture
def services(db, settings, clock, profiles, key_store):
    from ra_portal.wiring import Services
    return Services(settings=settings, db=db, clock=clock, profiles=profiles, _keys=key_store)


@pytest.fixture
def issuance(services):
    return services.issuance()


@pytest.fixture
def app(db, settings, clock, key_store):
    """The Flask app on the test database, sharing the session's HSM key store."""
    from ra_portal import create_app
    application = create_app(settings, clock=clock, testing=True)
    application.extensions["govca"]._keys = key_store
    yield application
    # Each app has its own engine: release its connections (PostgreSQL has a client limit).
    application.extensions["govca"].db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()
