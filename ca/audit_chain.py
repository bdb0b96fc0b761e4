"""Pure verification of the audit trail: the event chain, its head and the signed checkpoints.

No database here: callers feed records (from the database or from an export). The same checks,
with the same problem kinds, are re-implemented independently in tools/verify_audit_export.py.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ca.audit import GENESIS, event_hash
from ca.clock import UTC

CHECKPOINT_TYPE = "govca.audit.checkpoint/1"
MAX_SWAP_CANDIDATES = 200  # pairwise matching of altered events is quadratic (40k hashes)


@dataclass(frozen=True)
class ChainProblem:
    """One finding. `kind` is a stable word (see docs/audit.md); `seq` the event it names."""

    seq: int | None
    kind: str
    message: str
    other: int | None = None

    def line(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "trail"
        return f"{self.kind}: {where}: {self.message}"


@dataclass(frozen=True)
class EventRecord:
    row: int  # storage order (primary key); appends are serialised, so it grows with seq
    seq: int
    at: dt.datetime
    action: str
    actor: str
    target: str | None
    domain_id: int | None
    details: str
    prev_hash: str
    hash: str

    def computed_hash(self, seq: int | None = None) -> str:
        return event_hash(seq=self.seq if seq is None else seq, at=self.at, action=self.action,
                          actor=self.actor, target=self.target, domain_id=self.domain_id,
                          details=self.details, prev_hash=self.prev_hash)


@dataclass(frozen=True)
class CheckpointRecord:
    number: int
    seq: int
    hash: str
    count: int
    at: dt.datetime
    prev: str
    key_fingerprint: str
    algorithm: str
    signature: bytes

    def payload(self) -> bytes:
        return checkpoint_payload(number=self.number, seq=self.seq, hash=self.hash,
                                  count=self.count, at=self.at, prev=self.prev,
                                  key_fingerprint=self.key_fingerprint)


def checkpoint_payload(*, number: int, seq: int, hash: str, count: int, at: dt.datetime,
                       prev: str, key_fingerprint: str) -> bytes:
    """The exact bytes an audit key signs (canonical JSON, UTF-8)."""
    return json.dumps({
        "type": CHECKPOINT_TYPE, "number": number, "seq": seq, "hash": hash, "count": count,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"), "prev": prev,
        "cert": key_fingerprint,
    }, sort_keys=True, separators=(",", ":")).encode("ascii")


def payload_digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def signature_algorithm(public_key) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ecdsa-sha256"
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa-pss-sha256"
    raise ValueError(f"unsupported audit key type {type(public_key).__name__}")


def sign_payload(private_key, algorithm: str, payload: bytes) -> bytes:
    if algorithm == "ecdsa-sha256":
        return private_key.sign(payload, ec.ECDSA(hashes.SHA256()))
    if algorithm == "rsa-pss-sha256":
        return private_key.sign(payload, padding.PSS(padding.MGF1(hashes.SHA256()),
                                                     padding.PSS.DIGEST_LENGTH), hashes.SHA256())
    raise ValueError(f"unknown checkpoint algorithm {algorithm!r}")


def signature_valid(public_key, algorithm: str, payload: bytes, signature: bytes) -> bool:
    try:
        if algorithm == "ecdsa-sha256" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif algorithm == "rsa-pss-sha256" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, payload, padding.PSS(padding.MGF1(hashes.SHA256()),
                                                              padding.PSS.DIGEST_LENGTH),
                              hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


class ChainWalker:
    """Feed events in ascending seq order; `finish()` returns every problem found.

    Detects: altered events (fields no longer match the hash), two events that exchanged
    contents, deleted events (gaps), a broken link (an event rewritten with a recomputed hash),
    events stored out of order (row order disagrees with seq order), and a head that disagrees
    with the chain (truncation at the end, or events beyond the head)."""

    def __init__(self, start_seq: int = 1, start_hash: str = GENESIS, start_count: int = 0,
                 watch: set[int] = frozenset()) -> None:
        self.problems: list[ChainProblem] = []
        self.expected, self.prev_hash, self.prev_ok = start_seq, start_hash, True
        self.count, self.watch = start_count, set(watch)
        self.seen: dict[int, tuple[str, int]] = {}  # watched seq -> (stored hash, count)
        self.last_seq: int | None = None
        self._failing: list[EventRecord] = []
        self._window: list[tuple[int, int]] = []  # (seq, row) of the last two events

    # -- streaming ----------------------------------------------------------------------------
    def feed(self, ev: EventRecord) -> None:
        if ev.seq < self.expected:
            self.problems.append(ChainProblem(ev.seq, "reordered", f"event {ev.seq} appears "
                                              f"again after event {self.expected - 1}"))
            return
        gap = ev.seq > self.expected
        if gap:
            first, last = self.expected, ev.seq - 1
            what = f"event {first} is" if first == last else f"events {first}..{last} are"
            self.problems.append(ChainProblem(first, "deleted", f"{what} missing (the chain "
                                              f"jumps from {first - 1} to {ev.seq})",
                                              other=last))
        own_ok = ev.computed_hash() == ev.hash
        if not own_ok:
            self._failing.append(ev)
        elif not gap and self.prev_ok and ev.prev_hash != self.prev_hash:
            self.problems.append(ChainProblem(ev.seq, "broken_link", (
                f"event {ev.seq} does not link to event {ev.seq - 1}: event {ev.seq - 1} was "
                f"rewritten with a recomputed hash, or event {ev.seq} was inserted")))
        self.prev_hash, self.prev_ok, self.expected = ev.hash, own_ok, ev.seq + 1
        self.count += 1
        self.last_seq = ev.seq
        if ev.seq in self.watch:
            self.seen[ev.seq] = (ev.hash, self.count)
        self._order_step((ev.seq, ev.row))

    def _order_step(self, item: tuple[int, int] | None) -> None:
        # Judge the middle event of (previous, middle, next) once its next neighbour is known:
        # it is out of place if its row lies outside the rows of two neighbours that are
        # themselves in order. A swap of two rows flags exactly the two events involved.
        w = self._window
        if w:
            lo = w[-2][1] if len(w) >= 2 else float("-inf")
            hi = item[1] if item is not None else float("inf")
            seq, row = w[-1]
            if (lo < hi and not lo < row < hi) and not (lo == float("-inf") and
                                                         hi == float("inf")):
                self.problems.append(ChainProblem(seq, "reordered", (
                    f"event {seq} is stored out of order (row {row} lies outside its "
                    f"neighbours' rows): rows were swapped or moved")))
        if item is not None:
            self._window = (w + [item])[-2:]

    # -- end ----------------------------------------------------------------------------------
    def finish(self, head: tuple[int, str] | None, *, head_expected: bool = True
               ) -> list[ChainProblem]:
        self._order_step(None)
        self._match_swaps()
        end_seq = self.expected - 1
        if head is None:
            if head_expected and self.last_seq is not None:
                self.problems.append(ChainProblem(end_seq, "head_missing", (
                    "the audit head row is missing: the chain's end cannot be checked "
                    "(truncation)")))
        else:
            head_seq, head_hash = head
            if head_seq > end_seq:
                self.problems.append(ChainProblem(end_seq + 1, "truncated", (
                    f"the chain ends at event {end_seq} but the head says {head_seq}: events "
                    f"{end_seq + 1}..{head_seq} were removed")))
            elif head_seq < end_seq:
                self.problems.append(ChainProblem(head_seq + 1, "beyond_head", (
                    f"events {head_seq + 1}..{end_seq} lie beyond the head ({head_seq})")))
            elif head_hash != self.prev_hash:
                self.problems.append(ChainProblem(end_seq, "head_mismatch", (
                    f"the head's hash differs from event {end_seq}'s hash")))
        return sorted(self.problems, key=lambda p: (p.seq if p.seq is not None else -1))

    def _match_swaps(self) -> None:
        failing = self._failing
        belongs: dict[int, int] = {}
        if len(failing) <= MAX_SWAP_CANDIDATES:
            for x in failing:
                for y in failing:
                    if x.seq != y.seq and x.computed_hash(y.seq) == x.hash:
                        belongs[x.seq] = y.seq
                        break
        done: set[int] = set()
        for ev in failing:
            if ev.seq in done:
                continue
            other = belongs.get(ev.seq)
            if other is not None and belongs.get(other) == ev.seq:
                a, b = sorted((ev.seq, other))
                self.problems.append(ChainProblem(a, "swapped", (
                    f"events {a} and {b} have exchanged their contents"), other=b))
                done.update((a, b))
            elif other is not None:
                self.problems.append(ChainProblem(ev.seq, "moved", (
                    f"event {ev.seq} holds the contents of event {other}"), other=other))
            else:
                self.problems.append(ChainProblem(ev.seq, "altered", (
                    f"event {ev.seq} was altered: its fields no longer match its hash")))


def check_checkpoints(checkpoints: list[CheckpointRecord], walker: ChainWalker,
                      certificates: dict[str, x509.Certificate],
                      key_problems: dict[str, str] | None = None) -> list[ChainProblem]:
    """Every checkpoint: signature by a known audit certificate valid at its time, the checkpoint
    chain (numbers and `prev`), and agreement with the event chain at its seq."""
    problems: list[ChainProblem] = []
    key_problems = key_problems or {}
    prev_digest, expected_number = GENESIS, 1
    end_seq = walker.expected - 1
    for cp in sorted(checkpoints, key=lambda c: c.number):
        name = f"checkpoint {cp.number} (seq {cp.seq})"
        payload = cp.payload()
        if cp.number != expected_number:
            problems.append(ChainProblem(cp.seq, "checkpoint_missing", (
                f"checkpoints {expected_number}..{cp.number - 1} are missing before {name}")))
        elif cp.prev != prev_digest:
            problems.append(ChainProblem(cp.seq, "checkpoint_chain", (
                f"{name} does not follow checkpoint {cp.number - 1}")))
        prev_digest, expected_number = payload_digest(payload), cp.number + 1
        cert = certificates.get(cp.key_fingerprint)
        if cert is None:
            problems.append(ChainProblem(cp.seq, "checkpoint_key", (
                f"{name} names an unknown audit certificate {cp.key_fingerprint[:16]}")))
        elif cp.key_fingerprint in key_problems:
            problems.append(ChainProblem(cp.seq, "checkpoint_key", (
                f"{name}: {key_problems[cp.key_fingerprint]}")))
        elif not signature_valid(cert.public_key(), cp.algorithm, payload, cp.signature):
            problems.append(ChainProblem(cp.seq, "checkpoint_signature", (
                f"{name} has a bad signature: the checkpoint or its signature was altered")))
        elif not cert.not_valid_before_utc <= cp.at <= cert.not_valid_after_utc:
            problems.append(ChainProblem(cp.seq, "checkpoint_key", (
                f"{name} is dated {cp.at:%Y-%m-%d %H:%M:%S}, outside its certificate's "
                f"validity")))
        if cp.seq > end_seq:
            problems.append(ChainProblem(cp.seq, "truncated", (
                f"{name} signed a chain of {cp.seq} events but the chain ends at event "
                f"{end_seq}: events were removed from the end")))
            continue
        seen = walker.seen.get(cp.seq)
        if seen is None:
            problems.append(ChainProblem(cp.seq, "checkpoint_mismatch", (
                f"{name}: event {cp.seq}, which it signed, is missing")))
            continue
        stored_hash, count = seen
        if stored_hash != cp.hash:
            problems.append(ChainProblem(cp.seq, "checkpoint_mismatch", (
                f"{name}: the chain at seq {cp.seq} differs from what was signed (events up "
                f"to {cp.seq} were rewritten)")))
        elif count != cp.count:
            problems.append(ChainProblem(cp.seq, "checkpoint_count", (
                f"{name} counted {cp.count} events up to seq {cp.seq}; {count} remain")))
    return problems
