#!/usr/bin/env python3
"""Stand-alone verifier of a GovCA audit export (`govca audit export --out DIR`); needs only
the `cryptography` package. Usage: verify_audit_export.py DIR [--root-sha256 HEX]

It re-implements, independently of GovCA's code, the checks of `govca audit verify`: the hash
chain (altered, swapped, moved, deleted and reordered events, broken links), the head
(truncation), and every checkpoint (signature by an audit certificate that chains to a root in
the export, checkpoint chain, agreement with the events). One line per problem, naming the
event seq; exit status 0 when intact, 1 when a problem was found, 2 when the export is unusable.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

GENESIS = "0" * 64
INF = float("inf")


class Unusable(Exception):
    pass


def problem(out: list, seq, kind: str, message: str) -> None:
    out.append((seq, kind, message))


def event_hash(ev: dict, seq: int | None = None) -> str:
    body = {"seq": ev["seq"] if seq is None else seq, "at": ev["at"], "action": ev["action"],
            "actor": ev["actor"], "target": ev["target"], "domain_id": ev["domain_id"],
            "details": ev["details"], "prev": ev["prev_hash"]}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        raise Unusable(f"{path.name} is missing")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise Unusable(f"{path.name} line {n} is not JSON: {exc.msg}") from None
    return rows


def check_chain(events: list[dict], head: dict | None, watch: set[int], out: list):
    """Returns (end_seq, {watched seq: (hash, count)})."""
    expected, prev_hash, prev_ok, count = 1, GENESIS, True, 0
    seen: dict[int, tuple[str, int]] = {}
    failing: list[dict] = []
    order: list[tuple[int, int]] = []
    for ev in events:
        seq = ev["seq"]
        if seq < expected:
            problem(out, seq, "reordered", f"event {seq} appears again after event {expected - 1}")
            continue
        gap = seq > expected
        if gap:
            what = f"event {expected} is" if expected == seq - 1 else \
                f"events {expected}..{seq - 1} are"
            problem(out, expected, "deleted", f"{what} missing")
        ok = event_hash(ev) == ev["hash"]
        if not ok:
            failing.append(ev)
        elif not gap and prev_ok and ev["prev_hash"] != prev_hash:
            problem(out, seq, "broken_link", f"event {seq} does not link to event {seq - 1}")
        prev_hash, prev_ok, expected, count = ev["hash"], ok, seq + 1, count + 1
        if seq in watch:
            seen[seq] = (ev["hash"], count)
        order.append((seq, ev["row"]))
    # storage order: an event whose row lies outside its in-order neighbours' rows was moved
    for i, (seq, row) in enumerate(order):
        lo = order[i - 1][1] if i > 0 else -INF
        hi = order[i + 1][1] if i + 1 < len(order) else INF
        if lo < hi and not lo < row < hi and not (lo == -INF and hi == INF):
            problem(out, seq, "reordered", f"event {seq} is stored out of order (row {row})")
    belongs = {}
    if len(failing) <= 200:  # pairwise matching is quadratic; beyond, each is 'altered'
        for a in failing:
            for b in failing:
                if a["seq"] != b["seq"] and event_hash(a, b["seq"]) == a["hash"]:
                    belongs[a["seq"]] = b["seq"]
                    break
    done = set()
    for ev in failing:
        s = ev["seq"]
        if s in done:
            continue
        other = belongs.get(s)
        if other is not None and belongs.get(other) == s:
            lo_, hi_ = sorted((s, other))
            problem(out, lo_, "swapped", f"events {lo_} and {hi_} have exchanged their contents")
            done.update((lo_, hi_))
        elif other is not None:
            problem(out, s, "moved", f"event {s} holds the contents of event {other}")
        else:
            problem(out, s, "altered",
                    f"event {s} was altered: its fields no longer match its hash")
    end = expected - 1
    if head is None or head.get("seq") is None:
        if events:
            problem(out, end, "head_missing", "the export has no chain head (truncation)")
    elif head["seq"] > end:
        problem(out, end + 1, "truncated",
                f"the chain ends at {end} but the head says {head['seq']}")
    elif head["seq"] < end:
        problem(out, head["seq"] + 1, "beyond_head", f"events after the head ({head['seq']})")
    elif head["hash"] != prev_hash:
        problem(out, end, "head_mismatch", f"the head's hash differs from event {end}'s")
    return end, seen


def load_certificates(path: Path, root_pin: str | None, out: list, notes: list):
    """Audit certificates by fingerprint, with a problem text for those that fail their chain."""
    if not path.is_file():
        raise Unusable("certificates.pem is missing")
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError as exc:
        raise Unusable(f"certificates.pem: {exc}") from None
    fps = {hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest(): c for c in certs}
    bad: dict[str, str] = {}
    audit = {}
    for fp, cert in fps.items():
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if is_ca:
            continue
        audit[fp] = cert
        current, reason = cert, None
        for _ in range(8):
            parents = [c for c in certs if c.subject == current.issuer and _signed(current, c)]
            if not parents:
                reason = "its certificate does not chain to a root in the export"
                break
            current = parents[0]
            if current.subject == current.issuer:
                root_fp = hashlib.sha256(current.public_bytes(Encoding.DER)).hexdigest()
                if root_pin and root_fp != root_pin.lower():
                    reason = "its root is not the pinned root (--root-sha256)"
                elif not root_pin:
                    notes.append(f"root {current.subject.rfc4514_string()} sha256 {root_fp}: "
                                 f"compare it with the published fingerprint (or --root-sha256)")
                break
        else:
            reason = "its certificate chain is too long"
        if reason:
            bad[fp] = reason
    return audit, bad


def _signed(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not issued by"
        return False


def signature_ok(public_key, algorithm: str, payload: bytes, signature: bytes) -> bool:
    try:
        if algorithm == "ecdsa-sha256" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif algorithm == "rsa-pss-sha256" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, payload, padding.PSS(padding.MGF1(hashes.SHA256()),
                              padding.PSS.DIGEST_LENGTH), hashes.SHA256())
        else:
            return False
        return True
    except InvalidSignature:
        return False


def check_checkpoints(cps: list[dict], end: int, seen: dict, audit: dict, bad: dict,
                      out: list) -> None:
    prev, expected = GENESIS, 1
    for cp in sorted(cps, key=lambda c: c["number"]):
        seq, name = cp["seq"], f"checkpoint {cp['number']} (seq {cp['seq']})"
        payload = json.dumps({k: cp[k] for k in ("type", "number", "seq", "hash", "count", "at",
                                                  "prev", "cert")},
                             sort_keys=True, separators=(",", ":")).encode("ascii")
        if cp["number"] != expected:
            problem(out, seq, "checkpoint_missing", f"checkpoints before {name} are missing")
        elif cp["prev"] != prev:
            problem(out, seq, "checkpoint_chain", f"{name} does not follow its predecessor")
        prev, expected = hashlib.sha256(payload).hexdigest(), cp["number"] + 1
        cert = audit.get(cp["cert"])
        at = dt.datetime.fromisoformat(cp["at"])
        if cert is None:
            problem(out, seq, "checkpoint_key", f"{name} names an unknown audit certificate")
        elif cp["cert"] in bad:
            problem(out, seq, "checkpoint_key", f"{name}: {bad[cp['cert']]}")
        elif not signature_ok(cert.public_key(), cp["algorithm"], payload,
                              base64.b64decode(cp["signature"])):
            problem(out, seq, "checkpoint_signature", f"{name} has a bad signature")
        elif not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            problem(out, seq, "checkpoint_key", f"{name} is outside its certificate's validity")
        if seq > end:
            problem(out, seq, "truncated", f"{name} signed {seq} events; the chain ends at {end}")
        elif seq not in seen:
            problem(out, seq, "checkpoint_mismatch", f"{name}: event {seq} is missing")
        elif seen[seq][0] != cp["hash"]:
            problem(out, seq, "checkpoint_mismatch", f"{name}: the chain at seq {seq} differs")
        elif seen[seq][1] != cp["count"]:
            problem(out, seq, "checkpoint_count", f"{name} counted {cp['count']} events; "
                                                  f"{seen[seq][1]} remain")


def verify(directory: Path, root_pin: str | None = None):
    """(problems as (seq, kind, message), notes); raises Unusable."""
    if not directory.is_dir():
        raise Unusable(f"{directory} is not a directory")
    out: list = []
    notes: list[str] = []
    events = read_lines(directory / "events.jsonl")
    cps = read_lines(directory / "checkpoints.jsonl")
    head_path = directory / "head.json"
    try:
        head = json.loads(head_path.read_text("utf-8")) if head_path.is_file() else None
    except json.JSONDecodeError:
        raise Unusable("head.json is not JSON") from None
    events.sort(key=lambda e: e["seq"])  # file order is irrelevant; `row` keeps storage order
    end, seen = check_chain(events, head, {c["seq"] for c in cps}, out)
    audit, bad = load_certificates(directory / "certificates.pem", root_pin, out, notes)
    check_checkpoints(cps, end, seen, audit, bad, out)
    if not cps:
        notes.append("the export holds no checkpoint: only the hash chain was checked")
    out.sort(key=lambda p: (p[0] if p[0] is not None else -1))
    return out, notes, len(events), len(cps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--root-sha256", help="SHA-256 fingerprint of the trusted GovCA root")
    args = ap.parse_args(argv)
    try:
        problems, notes, n_events, n_cps = verify(args.directory, args.root_sha256)
    except (Unusable, KeyError, TypeError, ValueError) as exc:
        print(f"verify_audit_export: unusable export: {exc}", file=sys.stderr)
        return 2
    for seq, kind, message in problems:
        print(f"{kind}: seq {seq}: {message}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {n_events} events and {n_cps} checkpoints",
              file=sys.stderr)
        return 1
    print(f"intact: {n_events} events, {n_cps} checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
