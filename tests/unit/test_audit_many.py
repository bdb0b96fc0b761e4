"""audit.record_many(): several events with one head update, byte-identical to record() called
once per entry (same seqs, prev hashes and hashes), so the chain verifies whichever was used."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, text

from ca import audit
from ca.audit import Entry
from ca.audit_verify import verify_trail
from ca.store.models import AuditEvent, AuditHead
from tests.audit.conftest import tampering


def _problems(db):
    with db.transaction() as s:
        return [(p.kind, p.seq) for p in verify_trail(s).problems]


def _events(s, first):
    return s.execute(select(AuditEvent.seq, AuditEvent.prev_hash, AuditEvent.hash,
                            AuditEvent.details)
                     .where(AuditEvent.seq >= first).order_by(AuditEvent.seq)).all()


def _entries(clock, n, tag):
    return [Entry("test.many", actor="tester", at=clock.now() + dt.timedelta(seconds=i),
                  target=f"{tag}{i}", domain_id=None if i % 2 else 1,
                  details={"i": i, "name": "Nguyễn Văn Ạ", "pin": "1234"})
            for i in range(n)]


def test_record_many_writes_what_record_would(db, clock):
    entries = _entries(clock, 4, "a")
    # What record() writes for these entries (then rolled back: the head is untouched)...
    s = db.session()
    try:
        s.begin()
        first = s.get(AuditHead, 1).seq + 1
        for e in entries:
            audit.record(s, e.action, actor=e.actor, at=e.at, target=e.target,
                         domain_id=e.domain_id, details=e.details)
        expected = _events(s, first)
        s.rollback()
    finally:
        s.close()
    # ... is exactly what record_many() writes.
    with db.transaction() as s:
        seqs = audit.record_many(s, entries)
    with db.transaction() as s:
        got = _events(s, first)
        head = s.get(AuditHead, 1)
        assert (head.seq, head.hash) == (got[-1].seq, got[-1].hash)
    assert seqs == list(range(first, first + 4))
    assert got == expected and len(got) == 4
    assert all('"pin":"[redacted]"' in r.details and "1234" not in r.details for r in got)
    assert _problems(db) == []


def test_mixing_record_and_record_many_keeps_one_chain(db, clock):
    with db.transaction() as s:
        start = s.get(AuditHead, 1).seq
        audit.record(s, "test.one", actor="tester", at=clock.now(), target="x")
        a = audit.record_many(s, _entries(clock, 3, "b"))
        audit.record(s, "test.one", actor="tester", at=clock.now(), target="y")
    with db.transaction() as s:
        b = audit.record_many(s, _entries(clock, 2, "c"))
        assert audit.record_many(s, []) == []
        audit.record(s, "test.one", actor="tester", at=clock.now(), target="z")
    assert a == [start + 2, start + 3, start + 4] and b == [start + 6, start + 7]
    with db.transaction() as s:
        rows = _events(s, start + 1)
        assert [r.seq for r in rows] == list(range(start + 1, start + 9))
        assert all(r.prev_hash == p.hash for p, r in zip(rows, rows[1:]))
        assert s.get(AuditHead, 1).seq == start + 8
    assert _problems(db) == []


def test_tampering_inside_a_batch_is_detected(db, clock):
    with db.transaction() as s:
        seqs = audit.record_many(s, _entries(clock, 5, "d"))
    assert _problems(db) == []
    with tampering(db) as conn:
        conn.execute(text("UPDATE audit_event SET target = 'forged' WHERE seq = :s"),
                     {"s": seqs[2]})
    assert _problems(db) == [("altered", seqs[2])]


def test_deleting_the_tail_of_a_batch_is_detected(db, clock):
    with db.transaction() as s:
        seqs = audit.record_many(s, _entries(clock, 3, "e"))
    with tampering(db) as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq = :s"), {"s": seqs[-1]})
    assert _problems(db) != []


def test_a_bad_entry_writes_nothing(db, clock):
    with db.transaction() as s:
        before = s.get(AuditHead, 1).seq
        count = s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    naive = dt.datetime(2026, 6, 1, 8, 0)
    with pytest.raises(ValueError):
        with db.transaction() as s:
            audit.record_many(s, _entries(clock, 2, "f") + [Entry("test.many", "t", naive)])
    with db.transaction() as s:
        assert s.get(AuditHead, 1).seq == before
        assert s.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == count
    assert _problems(db) == []


def test_record_many_starts_the_chain_on_an_empty_database(empty_db, clock):
    with empty_db.transaction() as s:
        assert audit.record_many(s, _entries(clock, 3, "g")) == [1, 2, 3]
    with empty_db.transaction() as s:
        rows = _events(s, 1)
        assert rows[0].prev_hash == audit.GENESIS
    assert _problems(empty_db) == []
