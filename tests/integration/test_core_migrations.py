"""The Alembic migrations build exactly the schema of the models (Base.metadata, all modules)."""
from __future__ import annotations

import os
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from ca.store import migrate, schema  # noqa: F401  (every model module registers its tables)
from ca.store.base import Base
from ca.store.database import make_engine

BACKEND = os.environ.get("GOVCA_TEST_BACKEND", "sqlite")


@pytest.fixture
def empty_engine(tmp_path):
    """An engine on an empty database: a SQLite file, or on PostgreSQL a fresh schema inside
    the test database (first on the search_path), dropped afterwards."""
    if BACKEND != "postgresql":
        engine = make_engine(f"sqlite:///{tmp_path / 'migrate.sqlite3'}")
        yield engine
        engine.dispose()
        return
    url = os.environ["GOVCA_TEST_DATABASE_URL"]
    name = f"migtest_{uuid.uuid4().hex[:12]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    engine = make_engine(url, connect_args={"options": f"-csearch_path={name}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def test_upgrade_reaches_head(empty_engine):
    migrate.upgrade(empty_engine)
    cfg = migrate.alembic_config(empty_engine.url.render_as_string(hide_password=False))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert migrate.current(empty_engine) == head


def test_migrations_match_the_models(empty_engine):
    """Fails when a model changed without a migration (the founder regenerates them)."""
    migrate.upgrade(empty_engine)
    with empty_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "compare_server_default": False})
        diff = compare_metadata(ctx, Base.metadata)
    readable = "\n".join(repr(d) for d in diff)
    assert diff == [], f"the migrations differ from the models:\n{readable}"
