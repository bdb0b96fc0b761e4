"""`govca audit export`: events (JSON lines), checkpoints, head and the audit certificate chain,
verifiable offline by tools/verify_audit_export.py."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ca import audit
from ca.audit import AuditTampered
from ca.audit_chain import CHECKPOINT_TYPE, EventRecord
from ca.audit_verify import certificate_chain, checkpoint_records, consistent_snapshot, \
    event_records
from ca.clock import UTC, Clock
from ca.errors import InvalidInput
from ca.store.database import Database
from ca.store.models import AuditHead
from ca.store.models_audit import AuditKey

FORMAT = "govca.audit.export/1"
FILES = ("events.jsonl", "checkpoints.jsonl", "head.json", "certificates.pem")


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    events: int
    checkpoints: int
    head_seq: int | None
    unrecorded: str | None = None


def _time(t: dt.datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def event_line(ev: EventRecord) -> str:
    return json.dumps({"row": ev.row, "seq": ev.seq, "at": _time(ev.at), "action": ev.action,
                       "actor": ev.actor, "target": ev.target, "domain_id": ev.domain_id,
                       "details": ev.details, "prev_hash": ev.prev_hash, "hash": ev.hash},
                      ensure_ascii=False, separators=(",", ":"))


def _prepare(out: Path) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out} exists and is not an empty directory; choose a new one",
                           field="out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create {out}: {exc.strerror}", field="out") from None
    return out


def export_trail(db: Database, out: Path, *, clock: Clock, actor: str) -> ExportResult:
    """Write the whole trail to `out` (a new or empty directory). Reading the audit is itself
    audited: the export event is appended first, so the export contains it."""
    out = _prepare(out)
    unrecorded = None
    try:
        with db.transaction() as s:
            audit.record(s, "audit.export", actor=actor, at=clock.now(), target=str(out)[:200])
    except AuditTampered as exc:
        # A trail too damaged to append to is exactly when auditors need a copy: export anyway
        # and say so in head.json and to the caller.
        unrecorded = f"this export could not be recorded in the trail: {exc.message}"
    session = db.session()
    try:
        consistent_snapshot(session)  # one snapshot for every file
        head = session.get(AuditHead, 1)
        head_doc = {"format": FORMAT, "seq": head.seq if head else None,
                    "hash": head.hash if head else None, "exported_at": _time(clock.now())}
        if unrecorded:
            head_doc["unrecorded"] = unrecorded
        digests: dict[str, str] = {}
        n_events = 0
        with _open(out / "events.jsonl") as fh:
            for ev in event_records(session):
                fh.write(event_line(ev) + "\n")
                n_events += 1
        cps = checkpoint_records(session)
        with _open(out / "checkpoints.jsonl") as fh:
            for cp in cps:
                fh.write(json.dumps({
                    "type": CHECKPOINT_TYPE, "number": cp.number, "seq": cp.seq,
                    "hash": cp.hash, "count": cp.count, "at": _time(cp.at), "prev": cp.prev,
                    "cert": cp.key_fingerprint, "algorithm": cp.algorithm,
                    "signature": base64.b64encode(cp.signature).decode("ascii")},
                    separators=(",", ":")) + "\n")
        pems: list[bytes] = []
        ders = session.execute(select(AuditKey.certificate_der).order_by(AuditKey.id)).scalars()
        for der in ders:
            cert = x509.load_der_x509_certificate(der)
            chain, _problem = certificate_chain(session, cert)
            for c in [cert, *chain]:
                pem = c.public_bytes(serialization.Encoding.PEM)
                if pem not in pems:
                    pems.append(pem)
        (out / "certificates.pem").write_bytes(b"".join(pems))
        (out / "head.json").write_text(json.dumps(head_doc, indent=1) + "\n", "utf-8")
        session.rollback()
    finally:
        session.close()
    for name in FILES:
        digests[name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps({"format": FORMAT, "sha256": digests},
                                                  indent=1) + "\n", "utf-8")
    return ExportResult(out, n_events, len(cps), head_doc["seq"], unrecorded)


def _open(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    return os.fdopen(fd, "w", encoding="utf-8", newline="\n")
