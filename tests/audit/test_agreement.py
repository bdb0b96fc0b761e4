"""`govca audit verify` (database) and tools/verify_audit_export.py (export) name the same
problems, scenario by scenario."""
from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import select, text

from ca import audit
from ca.audit_checkpoint import take_checkpoint
from ca.audit_export import export_trail
from ca.audit_verify import verify_trail
from ca.store.models import AuditEvent
from tests.audit.conftest import swap_contents, tampering
from tests.audit.test_done_when import TOOL, _pairs


def _alter(conn, last):
    conn.execute(text("UPDATE audit_event SET target = 'x' WHERE seq = :s"), {"s": last - 5})


def _delete_two(conn, last):
    conn.execute(text("DELETE FROM audit_event WHERE seq IN (:a, :b)"),
                 {"a": last - 6, "b": last - 5})


def _swap(conn, last):
    swap_contents(conn, last - 7, last - 6)


def _swap_rows(conn, last):
    ids = dict(conn.execute(text("SELECT seq, id FROM audit_event WHERE seq IN (:a, :b)"),
                            {"a": last - 4, "b": last - 2}).all())
    conn.execute(text("UPDATE audit_event SET id = -5 WHERE seq = :a"), {"a": last - 4})
    conn.execute(text("UPDATE audit_event SET id = :i WHERE seq = :b"),
                 {"i": ids[last - 4], "b": last - 2})
    conn.execute(text("UPDATE audit_event SET id = :i WHERE seq = :a"),
                 {"i": ids[last - 2], "a": last - 4})


def _rewrite_link(conn, last):
    conn.execute(text("UPDATE audit_event SET prev_hash = :h WHERE seq = :s"),
                 {"h": "ab" * 32, "s": last - 3})


def _truncate(conn, last):
    prev = conn.execute(text("SELECT hash FROM audit_event WHERE seq = :s"),
                        {"s": last - 3}).scalar_one()
    conn.execute(text("DELETE FROM audit_event WHERE seq > :s"), {"s": last - 3})
    conn.execute(text("UPDATE audit_head SET seq = :s, hash = :h"), {"s": last - 3, "h": prev})


def _drop_head(conn, last):
    conn.execute(text("DELETE FROM audit_head"))


def _forge_checkpoint(conn, last):
    conn.execute(text("UPDATE audit_checkpoint SET seq = seq - 1"))


@pytest.mark.parametrize("tamper", [_alter, _delete_two, _swap, _swap_rows, _rewrite_link,
                                    _truncate, _drop_head, _forge_checkpoint],
                         ids=lambda f: f.__name__.strip("_"))
def test_both_verifiers_agree(services, audit_key, clock, tmp_path, tamper):
    with services.db.transaction() as s:
        for i in range(8):
            audit.record(s, "request.approve", actor="user:approver.hanoi", at=clock.now(),
                         target=f"request:{i}", domain_id=1, details={"i": i})
    take_checkpoint(services.db, services.keys, clock)
    with services.db.transaction() as s:
        last = s.execute(select(AuditEvent.seq).order_by(AuditEvent.seq.desc())).scalars().first()
    with tampering(services.db) as conn:
        tamper(conn, last)
    export_trail(services.db, tmp_path / "x", clock=clock, actor="test")
    with services.db.transaction() as s:
        db_pairs = {(p.kind, p.seq) for p in verify_trail(s, keys=services.keys).problems}
    res = subprocess.run([sys.executable, "-I", str(TOOL), str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=60)
    assert db_pairs, "the tampering went unnoticed"
    assert res.returncode == 1, res.stdout + res.stderr
    assert _pairs(res.stdout) == db_pairs, (res.stdout, db_pairs)
