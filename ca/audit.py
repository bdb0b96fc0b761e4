"""Hash-chained audit events, appended in the caller's transaction."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, NamedTuple, Sequence

from sqlalchemy import bindparam, insert, select, update
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


_SCALARS = (str, int, float, bool, type(None))


def _scrub(value: Any) -> Any:
    """Secrets never enter the audit trail, whatever a caller passes by mistake."""
    if isinstance(value, dict):
        return {k: ("[redacted]" if str(k).lower() in _SECRET_KEYS
                    else v if type(v) in _SCALARS else _scrub(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


# One encoder for every call: json.dumps() with these options builds a new JSONEncoder (and its
# C encoder) each time, a third of its cost for the small dicts the audit trail holds.
_DETAILS_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                 default=str)


def canonical_details(details: dict[str, Any] | None) -> str:
    return _DETAILS_JSON.encode(_scrub(details or {}))


_quote = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) quotes str with


def _hash_body(seq, at: str, action, actor, target, domain_id, details, prev_hash) -> str:
    """json.dumps({...}, sort_keys=True, separators=(",", ":"), ensure_ascii=False) of the event's
    fields, byte for byte (tests/audit/test_hash_encoding.py compares the two on random events),
    written out for the types the trail holds; anything else goes through json.dumps."""
    if (type(action) is str and type(actor) is str and type(details) is str
            and type(prev_hash) is str and type(seq) is int
            and (target is None or type(target) is str)
            and (domain_id is None or type(domain_id) is int)):
        return "".join((
            '{"action":', _quote(action), ',"actor":', _quote(actor), ',"at":', _quote(at),
            ',"details":', _quote(details),
            ',"domain_id":', "null" if domain_id is None else int.__repr__(domain_id),
            ',"prev":', _quote(prev_hash), ',"seq":', int.__repr__(seq),
            ',"target":', "null" if target is None else _quote(target), "}"))
    return json.dumps({
        "seq": seq, "at": at, "action": action, "actor": actor, "target": target,
        "domain_id": domain_id, "details": details, "prev": prev_hash,
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(*, seq: int, at: dt.datetime, action: str, actor: str, target: str | None,
               domain_id: int | None, details: str, prev_hash: str) -> str:
    """SHA-256 over a canonical JSON encoding of every field of the event and its predecessor.
    (Re-implemented byte for byte by tools/verify_audit_export.py: change both or neither.)"""
    when = require_aware(at).isoformat(timespec="microseconds")  # require_aware gives UTC
    return hashlib.sha256(_hash_body(seq, when, action, actor, target, domain_id, details,
                                     prev_hash).encode("utf-8")).hexdigest()


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


# The three statements of an append, built once (they run for every event written). The head
# row is locked, its sequence advanced by n and the previous hash read back in one statement
# (RETURNING gives the row after the update; its hash is not changed by it).
_HEAD = AuditHead.__table__
_BUMP = update(_HEAD).where(_HEAD.c.id == 1) \
    .values(seq=_HEAD.c.seq + bindparam("n", type_=_HEAD.c.seq.type)) \
    .returning(_HEAD.c.seq, _HEAD.c.hash)
_SET_HASH = update(_HEAD).where(_HEAD.c.id == 1).values(hash=bindparam("h"))
_INSERT = insert(AuditEvent.__table__)


def _expire_head(session: Session) -> None:
    loaded = session.identity_map.get(Session.identity_key(AuditHead, 1))
    if loaded is not None:  # an AuditHead read earlier in this session is now stale
        session.expire(loaded)


def record(session: Session, action: str, *, actor: str, at: dt.datetime,
           target: str | None = None, domain_id: int | None = None,
           details: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event in the caller's transaction. The head row is updated first, which locks
    it (row lock on PostgreSQL, write lock on SQLite) until the transaction ends."""
    # Core statements on the session's connection (no unit-of-work flush of the event).
    session.flush()  # the caller's pending changes first, as an ORM statement's autoflush did
    conn = session.connection()
    row = conn.execute(_BUMP, {"n": 1}).first()
    if row is None:
        _ensure_head(session)
        row = conn.execute(_BUMP, {"n": 1}).one()
    seq, prev = row.seq, row.hash
    at = require_aware(at).astimezone(UTC)
    text = canonical_details(details)
    digest = event_hash(seq=seq, at=at, action=action, actor=actor, target=target,
                        domain_id=domain_id, details=text, prev_hash=prev)
    values = dict(seq=seq, at=at, action=action, actor=actor, target=target,
                  domain_id=domain_id, details=text, prev_hash=prev, hash=digest)
    conn.execute(_INSERT, values)
    conn.execute(_SET_HASH, {"h": digest})
    _expire_head(session)
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
    n = len(prepared)
    row = conn.execute(_BUMP, {"n": n}).first()
    if row is None:
        _ensure_head(session)
        row = conn.execute(_BUMP, {"n": n}).one()
    seq, prev = row.seq - n, row.hash  # seq: the last seq before this call
    rows = []
    for e, at, text in prepared:
        seq += 1
        digest = event_hash(seq=seq, at=at, action=e.action, actor=e.actor, target=e.target,
                            domain_id=e.domain_id, details=text, prev_hash=prev)
        rows.append(dict(seq=seq, at=at, action=e.action, actor=e.actor, target=e.target,
                         domain_id=e.domain_id, details=text, prev_hash=prev, hash=digest))
        prev = digest
    conn.execute(_INSERT, rows)
    conn.execute(_SET_HASH, {"h": prev})
    _expire_head(session)
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
