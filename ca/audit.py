"""Hash-chained audit events, appended in the caller's transaction."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ca.clock import UTC, require_aware
from ca.store.models import AuditEvent, AuditHead

GENESIS = "0" * 64
_SECRET_KEYS = {"pin", "so_pin", "password", "secret", "token", "otp", "private_key"}


def _scrub(details: dict[str, Any]) -> dict[str, Any]:
    """Secrets never enter the audit trail, whatever a caller passes by mistake."""
    out: dict[str, Any] = {}
    for k, v in details.items():
        if k.lower() in _SECRET_KEYS:
            out[k] = "[redacted]"
        elif isinstance(v, dict):
            out[k] = _scrub(v)
        else:
            out[k] = v
    return out


def canonical_details(details: dict[str, Any] | None) -> str:
    return json.dumps(_scrub(details or {}), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)


def event_hash(*, seq: int, at: dt.datetime, action: str, actor: str, target: str | None,
               domain_id: int | None, details: str, prev_hash: str) -> str:
    """SHA-256 over a canonical JSON encoding of every field of the event and its predecessor."""
    body = json.dumps({
        "seq": seq, "at": require_aware(at).astimezone(UTC).isoformat(timespec="microseconds"),
        "action": action, "actor": actor, "target": target, "domain_id": domain_id,
        "details": details, "prev": prev_hash,
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _ensure_head(session: Session) -> None:
    if session.get(AuditHead, 1) is None:
        session.add(AuditHead(id=1, seq=0, hash=GENESIS))
        session.flush()


def record(session: Session, action: str, *, actor: str, at: dt.datetime,
           target: str | None = None, domain_id: int | None = None,
           details: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event in the caller's transaction. The head row is updated first, which locks
    it (row lock on PostgreSQL, write lock on SQLite) until the transaction ends."""
    _ensure_head(session)
    row = session.execute(
        update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1)
        .returning(AuditHead.seq)
    ).one()
    seq = row.seq
    prev = session.execute(select(AuditHead.hash).where(AuditHead.id == 1)).scalar_one()
    at = require_aware(at).astimezone(UTC)
    text = canonical_details(details)
    digest = event_hash(seq=seq, at=at, action=action, actor=actor, target=target,
                        domain_id=domain_id, details=text, prev_hash=prev)
    event = AuditEvent(seq=seq, at=at, action=action, actor=actor, target=target,
                       domain_id=domain_id, details=text, prev_hash=prev, hash=digest)
    session.add(event)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=digest))
    session.flush()
    return event


@dataclass(frozen=True)
class ChainProblem:
    seq: int | None
    kind: str  # altered | missing | reordered | head_mismatch
    message: str


def verify_chain(session: Session, batch: int = 5000) -> list[ChainProblem]:
    """Walk the chain in sequence order and report every break."""
    problems: list[ChainProblem] = []
    prev = GENESIS
    expected_seq = 1
    last_id = 0
    while True:
        rows = session.execute(
            select(AuditEvent).where(AuditEvent.seq >= expected_seq).order_by(AuditEvent.seq)
            .limit(batch)).scalars().all()
        if not rows:
            break
        for ev in rows:
            if ev.seq != expected_seq:
                problems.append(ChainProblem(expected_seq, "missing",
                                             f"events {expected_seq}..{ev.seq - 1} are missing"))
            if ev.id < last_id:
                problems.append(ChainProblem(ev.seq, "reordered",
                                             f"event {ev.seq} was stored out of order"))
            last_id = max(last_id, ev.id)
            digest = event_hash(seq=ev.seq, at=ev.at, action=ev.action, actor=ev.actor,
                                target=ev.target, domain_id=ev.domain_id, details=ev.details,
                                prev_hash=ev.prev_hash)
            if digest != ev.hash:
                problems.append(ChainProblem(ev.seq, "altered",
                                             f"event {ev.seq} does not match its hash"))
            elif ev.prev_hash != prev:
                problems.append(ChainProblem(ev.seq, "broken_link",
                                             f"event {ev.seq} does not follow event {ev.seq - 1}"))
            prev = ev.hash
            expected_seq = ev.seq + 1
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq != expected_seq - 1 or head.hash != prev):
        problems.append(ChainProblem(head.seq, "head_mismatch",
                                     f"the chain ends at {expected_seq - 1} but the head says {head.seq}"))
    return problems
