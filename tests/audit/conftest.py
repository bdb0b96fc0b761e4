"""Fixtures of the audit tests: append-only triggers, a tampering connection, the audit key,
and the environment for running `govca` against the test database and token."""
from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import text

from ca.audit_guard import install_append_only
from tests.conftest import TOKEN_LABEL, database_url

AUDIT_TABLES = ("audit_event", "audit_head", "audit_checkpoint", "audit_key")


@pytest.fixture
def guarded_db(db):
    """The demo database with the append-only triggers the migration installs."""
    with db.engine.begin() as conn:
        install_append_only(conn)
    return db


@contextlib.contextmanager
def tampering(db):
    """A connection acting as a database superuser would: triggers out of the way, then back."""
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            for t in AUDIT_TABLES:
                conn.execute(text(f'ALTER TABLE "{t}" DISABLE TRIGGER USER'))
        else:
            for (name,) in conn.execute(text(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE "
                    "'%append_only%'")).all():
                conn.execute(text(f"DROP TRIGGER {name}"))
        yield conn
        if conn.dialect.name == "postgresql":
            for t in AUDIT_TABLES:
                conn.execute(text(f'ALTER TABLE "{t}" ENABLE TRIGGER USER'))
        else:
            install_append_only(conn)


def swap_contents(conn, a: int, b: int) -> None:
    """Exchange every column but id and seq between the events with seq a and b."""
    cols = ("at", "action", "actor", "target", "domain_id", "details", "prev_hash", "hash")
    rows = {r.seq: r for r in conn.execute(text(
        f"SELECT seq, {', '.join(cols)} FROM audit_event WHERE seq IN (:a, :b)"),
        {"a": a, "b": b})}
    for mine, theirs in ((a, b), (b, a)):
        src = rows[theirs]._mapping
        conn.execute(text(f"UPDATE audit_event SET {', '.join(f'{c} = :{c}' for c in cols)} "
                          f"WHERE seq = :seq"), {**{c: src[c] for c in cols}, "seq": mine})


@pytest.fixture
def audit_key(services):
    from ca.audit_checkpoint import init_key
    return init_key(services.db, services.keys, services.issuance(), services.clock,
                    actor="test").key


@pytest.fixture
def cli_env(settings, hsm_config, tmp_path):
    """Environment for `govca` run in-process on the test database and the session token."""
    return {"GOVCA_INSTANCE": str(tmp_path), "GOVCA_DATABASE_URL": database_url(tmp_path),
            "GOVCA_PKCS11_MODULE": hsm_config.module, "GOVCA_PKCS11_TOKEN": TOKEN_LABEL,
            "GOVCA_PKCS11_PIN_FILE": str(hsm_config.pin_file),
            "GOVCA_SECRET_KEY_FILE": str(tmp_path / "secret-key"),
            "GOVCA_PROFILES_FILE": str(tmp_path / "profiles.json")}
