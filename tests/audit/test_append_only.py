"""Append-only at the database level: the triggers the migration installs."""
from __future__ import annotations

import pytest
from sqlalchemy import exc, text

from ca import audit
from ca.audit_guard import append_only_installed, drop_append_only, install_append_only
from ca.audit_verify import verify_trail


@pytest.mark.parametrize("statement", [
    "UPDATE audit_event SET actor = 'mallory' WHERE seq = 2",
    "DELETE FROM audit_event WHERE seq = 2",
    "DELETE FROM audit_head",
    "UPDATE audit_head SET seq = 1",
])
def test_tampering_statements_are_refused(guarded_db, statement):
    with pytest.raises(exc.DBAPIError, match="append-only"):
        with guarded_db.engine.begin() as conn:
            conn.execute(text(statement))


def test_appends_still_work_and_install_is_idempotent(guarded_db, clock):
    with guarded_db.engine.begin() as conn:
        install_append_only(conn)
        assert append_only_installed(conn)
    with guarded_db.transaction() as s:
        for i in range(3):
            audit.record(s, "test.event", actor="tester", at=clock.now(), details={"i": i})
    with guarded_db.transaction() as s:
        assert verify_trail(s, check_checkpoints=False).ok


def test_drop_removes_the_guard(guarded_db):
    with guarded_db.engine.begin() as conn:
        drop_append_only(conn)
        assert not append_only_installed(conn)
        conn.execute(text("UPDATE audit_event SET actor = 'x' WHERE seq = 1"))
    with guarded_db.engine.begin() as conn:
        install_append_only(conn)
