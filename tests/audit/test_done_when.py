"""Done-when of issue 7 part 1: alter, delete and swap audit rows in the database; `govca audit
verify` names each, and the stand-alone verifier agrees on an export of the same data."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select, text

from ca import audit
from ca.store.models import AuditEvent
from ra_portal.cli import main
from tests.audit.conftest import swap_contents, tampering

TOOL = Path(__file__).resolve().parents[2] / "tools" / "verify_audit_export.py"


def govca(env, *args):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def offline(directory: Path, *args):
    return subprocess.run([sys.executable, "-I", str(TOOL), str(directory), *args],
                          capture_output=True, text=True, timeout=60)


def _pairs(lines: str) -> set[tuple[str, int]]:
    out = set()
    for line in lines.splitlines():
        kind, _, rest = line.partition(": seq ")
        if rest:
            out.add((kind, int(rest.split(":")[0])))
    return out


def _append(db, clock, n):
    with db.transaction() as s:
        for i in range(n):
            audit.record(s, "cert.revoke", actor="ra.hanoi", at=clock.now(), target=f"issuing:{i:x}",
                         domain_id=1, details={"reason": "keyCompromise", "note": "Hà Nội"})


def test_verify_names_each_tampering_and_the_offline_verifier_agrees(
        guarded_db, clock, cli_env, tmp_path):
    r = govca(cli_env, "audit", "init-key")
    assert r.exit_code == 0 and "audit key created" in r.output, r.output
    assert "audit key exists" in govca(cli_env, "audit", "init-key").output
    _append(guarded_db, clock, 12)
    r = govca(cli_env, "audit", "checkpoint")
    assert r.exit_code == 0 and r.output.startswith("checkpoint 1:"), r.output
    r = govca(cli_env, "audit", "verify")
    assert r.exit_code == 0 and "audit trail intact" in r.output, r.output

    clean = tmp_path / "clean"
    r = govca(cli_env, "audit", "export", "--out", str(clean))
    assert r.exit_code == 0, r.output
    ok = offline(clean)
    assert ok.returncode == 0 and ok.stdout.startswith("intact:"), ok.stdout + ok.stderr

    with guarded_db.transaction() as s:
        last = s.execute(select(AuditEvent.seq).order_by(AuditEvent.seq.desc())).scalars().first()
    altered, deleted, swap_a, swap_b = last - 10, last - 8, last - 6, last - 3
    with tampering(guarded_db) as conn:
        conn.execute(text("UPDATE audit_event SET details = :d WHERE seq = :s"),
                     {"d": '{"reason":"superseded"}', "s": altered})
        conn.execute(text("DELETE FROM audit_event WHERE seq = :s"), {"s": deleted})
        swap_contents(conn, swap_a, swap_b)

    r = govca(cli_env, "audit", "verify")
    assert r.exit_code == 4, r.output
    found = _pairs(r.stdout)
    assert {("altered", altered), ("deleted", deleted), ("swapped", swap_a)} <= found, r.stdout
    # the signed checkpoint over these events also notices that one of them is gone
    with guarded_db.transaction() as s:
        cp_seq = s.execute(text("SELECT seq FROM audit_checkpoint")).scalar_one()
    assert found == {("altered", altered), ("deleted", deleted), ("swapped", swap_a),
                     ("checkpoint_count", cp_seq)}, r.stdout
    assert f"events {swap_a} and {swap_b}" in r.stdout

    tampered = tmp_path / "tampered"
    r = govca(cli_env, "audit", "export", "--out", str(tampered))
    assert r.exit_code == 0, r.output
    res = offline(tampered)
    assert res.returncode == 1, res.stdout + res.stderr
    assert _pairs(res.stdout) == found

    # Reading the audit is audited: each verify and export left an event.
    with guarded_db.transaction() as s:
        actions = s.execute(select(AuditEvent.action).where(AuditEvent.action.like("audit.%"))
                            .order_by(AuditEvent.seq)).scalars().all()
    assert actions == ["audit.key.init", "audit.verify", "audit.export", "audit.verify",
                       "audit.export"]


def test_offline_verifier_catches_edits_to_the_export_files(guarded_db, clock, cli_env, tmp_path):
    assert govca(cli_env, "audit", "init-key").exit_code == 0
    _append(guarded_db, clock, 4)
    assert govca(cli_env, "audit", "checkpoint").exit_code == 0
    out = tmp_path / "x"
    assert govca(cli_env, "audit", "export", "--out", str(out)).exit_code == 0
    # the export's own event comes after the checkpoint: cover it too
    lines = (out / "events.jsonl").read_text("utf-8").splitlines()
    events = [json.loads(x) for x in lines]
    cps = [json.loads(x) for x in (out / "checkpoints.jsonl").read_text().splitlines()]
    cp_seq = cps[0]["seq"]
    # 1. drop the last two events covered by the checkpoint and fix the head: truncation
    kept = [e for e in events if e["seq"] <= cp_seq - 2]
    (out / "events.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n"
                                              for e in kept), "utf-8")
    (out / "head.json").write_text(json.dumps({"seq": kept[-1]["seq"], "hash": kept[-1]["hash"]}))
    res = offline(out)
    assert res.returncode == 1 and _pairs(res.stdout) == {("truncated", cp_seq)}, res.stdout
    # 2. a forged checkpoint signature
    cps[0]["count"] += 1
    (out / "checkpoints.jsonl").write_text(json.dumps(cps[0]) + "\n")
    res = offline(out)
    assert ("checkpoint_signature", cp_seq) in _pairs(res.stdout), res.stdout
    # 3. a pinned root that is not the export's root
    res = offline(out, "--root-sha256", "00" * 32)
    assert ("checkpoint_key", cp_seq) in _pairs(res.stdout), res.stdout


def test_cli_errors_are_clear(guarded_db, cli_env, tmp_path):
    r = govca(cli_env, "audit", "checkpoint")
    assert r.exit_code == 1 and "govca audit init-key" in r.stderr and "Traceback" not in r.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    r = govca(cli_env, "audit", "export", "--out", str(tmp_path / "full"))
    assert r.exit_code == 1 and "not an empty directory" in r.stderr
    r = govca(cli_env, "audit", "init-key", "--key", "dsa1024")
    assert r.exit_code == 1 and "unsupported key type" in r.stderr
    r = govca(cli_env, "audit", "init-key", "--ca", "nope")
    assert r.exit_code == 1 and "no CA named 'nope'" in r.stderr
    res = offline(tmp_path / "missing")
    assert res.returncode == 2 and "unusable export" in res.stderr and "Traceback" not in res.stderr


def test_offline_tool_needs_only_cryptography():
    tree = ast.parse(TOOL.read_text("utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) == {"cryptography"}
