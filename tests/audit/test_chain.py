"""The hash chain and its head against direct SQL tampering (no HSM needed)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from ca import audit
from ca.audit import AuditTampered
from ca.audit_verify import verify_trail
from ca.store.models import AuditEvent
from tests.audit.conftest import swap_contents, tampering


def _kinds(db):
    with db.transaction() as s:
        return [(p.kind, p.seq) for p in verify_trail(s).problems]


def _append(db, clock, n=5, **details):
    with db.transaction() as s:
        for i in range(n):
            audit.record(s, "test.event", actor="tester", at=clock.now(), target=f"t{i}",
                         details={"i": i, **details})
    with db.transaction() as s:
        return s.execute(select(func.max(AuditEvent.seq))).scalar_one()


def test_demo_chain_is_intact_and_secrets_are_scrubbed(db, clock):
    last = _append(db, clock, 1, password="hunter2", nested={"pin": "1234"}, items=[{"otp": 1}])
    assert last > 5 and _kinds(db) == []
    with db.transaction() as s:
        details = s.execute(select(AuditEvent.details).where(AuditEvent.seq == last)).scalar_one()
    assert "hunter2" not in details and "1234" not in details and '"otp":1' not in details
    with db.session() as s:
        assert audit.verify_chain(s) == []


def test_altered_event_is_named(db, clock):
    _append(db, clock)
    with tampering(db) as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE seq = 3"))
    assert _kinds(db) == [("altered", 3)]


def test_deleted_event_is_named(db, clock):
    _append(db, clock)
    with tampering(db) as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq = 4"))
    assert _kinds(db) == [("deleted", 4)]


def test_swapped_contents_are_named(db, clock):
    _append(db, clock)
    with tampering(db) as conn:
        swap_contents(conn, 2, 5)
    assert _kinds(db) == [("swapped", 2)]
    with db.transaction() as s:
        [p] = verify_trail(s).problems
    assert p.other == 5 and "events 2 and 5" in p.line()


def test_swapped_rows_with_their_seq_are_named_by_storage_order(db, clock):
    _append(db, clock)
    with tampering(db) as conn:
        ids = dict(conn.execute(text("SELECT seq, id FROM audit_event WHERE seq IN (3, 6)")).all())
        conn.execute(text("UPDATE audit_event SET id = -1 WHERE seq = 3"))
        conn.execute(text("UPDATE audit_event SET id = :i WHERE seq = 6"), {"i": ids[3]})
        conn.execute(text("UPDATE audit_event SET id = :i WHERE seq = 3"), {"i": ids[6]})
    assert _kinds(db) == [("reordered", 3), ("reordered", 6)]


def test_rewritten_event_with_recomputed_hash_breaks_the_next_link(db, clock):
    _append(db, clock)
    with db.transaction() as s:
        ev = s.execute(select(AuditEvent).where(AuditEvent.seq == 4)).scalar_one()
        forged = audit.event_hash(seq=4, at=ev.at, action=ev.action, actor="mallory",
                                  target=ev.target, domain_id=ev.domain_id, details=ev.details,
                                  prev_hash=ev.prev_hash)
    with tampering(db) as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'mallory', hash = :h WHERE seq = 4"),
                     {"h": forged})
    assert _kinds(db) == [("broken_link", 5)]


def test_truncation_at_the_end_is_named(db, clock):
    last = _append(db, clock)
    with tampering(db) as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq > :s"), {"s": last - 2})
    assert _kinds(db) == [("truncated", last - 1)]


def test_missing_head_is_named_and_stops_appends(db, clock):
    _append(db, clock)
    with tampering(db) as conn:
        conn.execute(text("DELETE FROM audit_head"))
    assert [k for k, _ in _kinds(db)] == ["head_missing"]
    with pytest.raises(AuditTampered, match="head row is missing"):
        _append(db, clock, 1)


def test_empty_trail_starts_a_chain(empty_db, clock):
    _append(empty_db, clock, 3)
    assert _kinds(empty_db) == []
