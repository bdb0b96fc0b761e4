"""`govca audit verify` against the database: streams the chain, checks head and checkpoints."""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select
from sqlalchemy.exc import SAWarning
from sqlalchemy.orm import Session

from ca.audit_chain import ChainProblem, ChainWalker, CheckpointRecord, EventRecord
from ca.audit_chain import check_checkpoints as _check_checkpoints
from ca.errors import CAError
from ca.store.models import AuditEvent, AuditHead, CertificateAuthority
from ca.store.models_audit import AuditCheckpoint, AuditKey

__all__ = ["ChainProblem", "TrailReport", "verify_trail", "event_records", "checkpoint_records",
           "audit_certificates", "certificate_chain"]


@dataclass
class TrailReport:
    problems: list[ChainProblem]
    events: int = 0
    head_seq: int | None = None
    checkpoints: int = 0
    last_checkpoint: CheckpointRecord | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


_EVENT_COLUMNS = (AuditEvent.id, AuditEvent.seq, AuditEvent.at, AuditEvent.action,
                  AuditEvent.actor, AuditEvent.target, AuditEvent.domain_id, AuditEvent.details,
                  AuditEvent.prev_hash, AuditEvent.hash)


def event_records(session: Session, start_seq: int = 1, batch: int = 5000
                  ) -> Iterator[EventRecord]:
    """Every event from `start_seq` on, in seq order, read in keyset-paginated batches (plain
    rows, no ORM objects: a verification walks millions)."""
    next_seq = start_seq
    while True:
        rows = session.execute(select(*_EVENT_COLUMNS).where(AuditEvent.seq >= next_seq)
                               .order_by(AuditEvent.seq).limit(batch)).all()
        if not rows:
            return
        for r in rows:
            yield EventRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
        next_seq = rows[-1][1] + 1


def to_checkpoint_record(cp: AuditCheckpoint) -> CheckpointRecord:
    return CheckpointRecord(number=cp.number, seq=cp.seq, hash=cp.hash, count=cp.event_count,
                            at=cp.at, prev=cp.prev, key_fingerprint=cp.key_fingerprint,
                            algorithm=cp.algorithm, signature=cp.signature)


def checkpoint_records(session: Session) -> list[CheckpointRecord]:
    rows = session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.number)).scalars()
    return [to_checkpoint_record(cp) for cp in rows]


def certificate_chain(session: Session, cert: x509.Certificate
                      ) -> tuple[list[x509.Certificate], str | None]:
    """The CA certificates above `cert` up to a self-signed root, each verified against its
    issuer; returns (chain, problem or None)."""
    cas = [x509.load_der_x509_certificate(der) for der in
           session.execute(select(CertificateAuthority.certificate_der)).scalars()]
    chain: list[x509.Certificate] = []
    current = cert
    for _ in range(8):
        issuers = [c for c in cas if c.subject == current.issuer]
        parent = None
        for candidate in issuers:
            try:
                current.verify_directly_issued_by(candidate)
                parent = candidate
                break
            except Exception:  # noqa: BLE001 - InvalidSignature, wrong key type: not the issuer
                continue
        if parent is None:
            return chain, "its certificate is not signed by any GovCA CA"
        if parent == current:
            return chain, None
        chain.append(parent)
        if parent.subject == parent.issuer:
            return chain, None
        current = parent
    return chain, "its certificate chain is too long"


def audit_certificates(session: Session, keys=None
                       ) -> tuple[dict[str, x509.Certificate], dict[str, str], list[str]]:
    """The audit certificates by SHA-256 fingerprint, problems per fingerprint (not issued by a
    GovCA CA, or, when `keys` is given, not matching the key held in the HSM), and notes."""
    certs: dict[str, x509.Certificate] = {}
    problems: dict[str, str] = {}
    notes: list[str] = []
    for row in session.execute(select(AuditKey).order_by(AuditKey.id)).scalars():
        fp = hashlib.sha256(row.certificate_der).hexdigest()
        try:
            cert = x509.load_der_x509_certificate(row.certificate_der)
        except ValueError:
            problems[row.fingerprint_sha256] = "its stored certificate is not valid DER"
            continue
        certs[fp] = cert
        if fp != row.fingerprint_sha256:
            problems[row.fingerprint_sha256] = "its stored certificate was replaced"
            continue
        _chain, problem = certificate_chain(session, cert)
        if problem:
            problems[fp] = problem
            continue
        if keys is not None:
            try:
                hsm_key = keys.load(bytes.fromhex(row.key_id), row.key_label)
            except CAError as exc:
                notes.append(f"audit key {row.key_label}: HSM not checked ({exc.message})")
                continue
            except Exception:  # the key is gone from the token
                if row.status == "active":
                    problems[fp] = "the active audit key is missing from the HSM"
                continue
            spki = serialization.PublicFormat.SubjectPublicKeyInfo
            enc = serialization.Encoding.DER
            if (hsm_key.public_key().public_bytes(enc, spki)
                    != cert.public_key().public_bytes(enc, spki)):
                problems[fp] = "its certificate does not match the audit key held in the HSM"
    return certs, problems, notes


def consistent_snapshot(session: Session) -> None:
    """On PostgreSQL, read everything from one snapshot (REPEATABLE READ): appends committed
    during a long walk must not look like a head beyond the chain's end. Call first in a
    transaction; a session already in use keeps its level. (SQLite transactions are snapshots.)"""
    if session.get_bind().dialect.name != "postgresql":
        return
    with warnings.catch_warnings():  # "connection already established": level kept
        warnings.simplefilter("ignore", SAWarning)
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def verify_trail(session: Session, *, batch: int = 5000, check_checkpoints: bool = True,
                 keys=None) -> TrailReport:
    """Check the whole chain, its head and (by default) every checkpoint, in one snapshot."""
    consistent_snapshot(session)
    checkpoints = checkpoint_records(session) if check_checkpoints else []
    walker = ChainWalker(watch={cp.seq for cp in checkpoints})
    for ev in event_records(session, batch=batch):
        walker.feed(ev)
    head = session.get(AuditHead, 1)
    problems = walker.finish((head.seq, head.hash) if head is not None else None)
    notes: list[str] = []
    if check_checkpoints:
        certs, key_problems, notes = audit_certificates(session, keys)
        problems += _check_checkpoints(checkpoints, walker, certs, key_problems)
        if not checkpoints and walker.count:
            notes.append("no checkpoint yet: run `govca audit checkpoint`")
        elif checkpoints and head is not None and head.seq > checkpoints[-1].seq:
            notes.append(f"events {checkpoints[-1].seq + 1}..{head.seq} are not yet covered by a "
                         f"checkpoint")
    return TrailReport(problems=problems, events=walker.count,
                       head_seq=head.seq if head is not None else None,
                       checkpoints=len(checkpoints),
                       last_checkpoint=checkpoints[-1] if checkpoints else None, notes=notes)



def verify_segment(session: Session, last: CheckpointRecord | None, head_seq: int,
                   head_hash: str) -> list[ChainProblem]:
    """The events after checkpoint `last` up to the head (what a new checkpoint would sign)."""
    if last is None:
        walker = ChainWalker()
    else:
        walker = ChainWalker(start_seq=last.seq + 1, start_hash=last.hash, start_count=last.count)
    for ev in event_records(session, start_seq=walker.expected):
        if ev.seq > head_seq:
            break
        walker.feed(ev)
    return walker.finish((head_seq, head_hash))


def count_events(session: Session, up_to_seq: int) -> int:
    return session.execute(select(func.count()).select_from(AuditEvent)
                           .where(AuditEvent.seq <= up_to_seq)).scalar_one()

