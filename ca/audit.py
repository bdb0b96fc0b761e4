"""Hash-chained audit events, appended in the caller's transaction."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, NamedTuple, Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ca.clock import UTC, require_aware
from ca.errors import CAError
from ca.store.models import AuditEvent, AuditHead

GENESIS = "0" * 64
_SECRET_KEYS = {"pin", "so_pin", "user_pin", "password", "secret", "token", "otp", "totp",
                "private_key", "api_token", "pin_file_content"}


class AuditTampered(CAError):
    """The audit trail is not in the state its own records say it must be in."""
    code = "audit_tampered"


def _scrub(value: Any) -> Any:
    """Secrets never enter the audit trail, whatever a caller passes by mistake."""
    if isinstance(value, dict):
        return {k: ("[redacted]" if str(k).lower() in _SECRET_KEYS else _scrub(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def canonical_details(details: dict[str, Any] | None) -> str:
    return json.dumps(_scrub(details or {}), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)


def event_hash(*, seq: int, at: dt.datetime, action: str, actor: str, target: str | None,
               domain_id: int | None, details: str, prev_hash: str) -> str:
    """SHA-256 over a canonical JSON encoding of every field of the event and its predecessor.
    (Re-implemented byte for byte by tools/verify_audit_export.py: change both or neither.)"""
    body = json.dumps({
        "seq": seq, "at": require_aware(at).astimezone(UTC).isoformat(timespec="microseconds"),
        "action": action, "actor": actor, "target": target, "domain_id": domain_id,
        "details": details, "prev": prev_hash,
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _ensure_head(session: Session) -> None:
    if session.get(AuditHead, 1) is not None:
        return
    if session.execute(select(AuditEvent.id).limit(1)).first() is not None:
        # Events exist but their head is gone: someone removed it (truncation). Appending would
        # restart the chain and hide that; refuse until an auditor has looked.
        raise AuditTampered("the audit head row is missing while events exist; run "
                            "`govca audit verify`")
    session.add(AuditHead(id=1, seq=0, hash=GENESIS))
    session.flush()


def record(session: Session, action: str, *, actor: str, at: dt.datetime,
           target: str | None = None, domain_id: int | None = None,
           details: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event in the caller's transaction. The head row is updated first, which locks
    it (row lock on PostgreSQL, write lock on SQLite) until the transaction ends."""
    # Core statements on the session's connection (no unit-of-work flush: this runs twice per
    # certificate issued). One statement takes the lock, advances the sequence and reads the
    # previous hash (RETURNING gives the row after the update; its hash is not changed by it).
    session.flush()  # the caller's pending changes first, as an ORM statement's autoflush did
    conn = session.connection()
    head = AuditHead.__table__
    bump = update(head).where(head.c.id == 1).values(seq=head.c.seq + 1) \
        .returning(head.c.seq, head.c.hash)
    row = conn.execute(bump).first()
    if row is None:
        _ensure_head(session)
        row = conn.execute(bump).one()
    seq, prev = row.seq, row.hash
    at = require_aware(at).astimezone(UTC)
    text = canonical_details(details)
    digest = event_hash(seq=seq, at=at, action=action, actor=actor, target=target,
                        domain_id=domain_id, details=text, prev_hash=prev)
    values = dict(seq=seq, at=at, action=action, actor=actor, target=target,
                  domain_id=domain_id, details=text, prev_hash=prev, hash=digest)
    conn.execute(insert(AuditEvent.__table__).values(**values))
    conn.execute(update(head).where(head.c.id == 1).values(hash=digest))
    loaded = session.identity_map.get(Session.identity_key(AuditHead, 1))
    if loaded is not None:  # an AuditHead read earlier in this session is now stale
        session.expire(loaded)
    return AuditEvent(**values)  # a detached copy of what was written


class Entry(NamedTuple):
    """One event for record_many(): the same fields as record()'s arguments."""
    action: str
    actor: str
    at: dt.datetime
    target: str | None = None
    domain_id: int | None = None
    details: dict[str, Any] | None = None


def record_many(session: Session, entries: Sequence[Entry]) -> list[int]:
    """Append several events in the caller's transaction, in order, with one head update that
    advances the sequence by len(entries), one multi-row INSERT and one head write. The events are
    exactly those record() would write called once per entry (same seqs, hashes and chain), so
    verify_chain() cannot tell the two apart. Returns the seqs given to the entries."""
    entries = list(entries)
    if not entries:
        return []
    # Everything that can fail on the caller's input fails before the head is touched.
    prepared = []
    for e in entries:
        if not isinstance(e, Entry):
            e = Entry(*e) if isinstance(e, tuple) else Entry(**e)
        prepared.append((e, require_aware(e.at).astimezone(UTC), canonical_details(e.details)))
    session.flush()
    conn = session.connection()
    head = AuditHead.__table__
    n = len(prepared)
    bump = update(head).where(head.c.id == 1).values(seq=head.c.seq + n) \
        .returning(head.c.seq, head.c.hash)
    row = conn.execute(bump).first()
    if row is None:
        _ensure_head(session)
        row = conn.execute(bump).one()
    seq, prev = row.seq - n, row.hash  # seq: the last seq before this call
    rows = []
    for e, at, text in prepared:
        seq += 1
        digest = event_hash(seq=seq, at=at, action=e.action, actor=e.actor, target=e.target,
                            domain_id=e.domain_id, details=text, prev_hash=prev)
        rows.append(dict(seq=seq, at=at, action=e.action, actor=e.actor, target=e.target,
                         domain_id=e.domain_id, details=text, prev_hash=prev, hash=digest))
        prev = digest
    conn.execute(insert(AuditEvent.__table__), rows)
    conn.execute(update(head).where(head.c.id == 1).values(hash=prev))
    loaded = session.identity_map.get(Session.identity_key(AuditHead, 1))
    if loaded is not None:
        session.expire(loaded)
    return [r["seq"] for r in rows]


def verify_chain(session: Session, batch: int = 5000):
    """Every problem of the hash chain and its head (checkpoints: ca.audit_verify.verify_trail)."""
    from ca.audit_verify import verify_trail
    return verify_trail(session, batch=batch, check_checkpoints=False).problems


def __getattr__(name: str):  # ChainProblem moved to ca.audit_verify; keep the old name working
    if name == "ChainProblem":
        from ca.audit_verify import ChainProblem
        return ChainProblem
    raise AttributeError(name)
