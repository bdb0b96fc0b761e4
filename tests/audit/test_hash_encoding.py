"""The audit hash is over bytes that must never change (every stored chain, the exported trail's
verifier tools/verify_audit_export.py). ca.audit writes the canonical JSON out by hand for speed;
these tests hold it to json.dumps, the definition, on random and awkward events."""
from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
import random
from pathlib import Path

import pytest

from ca import audit
from ca.clock import UTC

ROOT = Path(__file__).resolve().parents[2]

ALPHABET = ("abcXYZ019 _-:./,\"\\'{}[]\n\r\t\b\f\x00\x01\x1f\x7f\u0080\u00a0"
            "ăâđêôơưĂÂĐÊÔƠƯàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ"
            "\u0301\u0303\u2028\u2029\ufeff\U0001f600\U00020000")


def _text(rng: random.Random, n: int = 40) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, n)))


def _reference(seq, at, action, actor, target, domain_id, details, prev_hash) -> str:
    """The definition (ca/audit.py before the hand-written encoding, and the export verifier)."""
    body = json.dumps({
        "seq": seq, "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "action": action, "actor": actor, "target": target, "domain_id": domain_id,
        "details": details, "prev": prev_hash,
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _reference_details(details) -> str:
    def scrub(value):
        if isinstance(value, dict):
            return {k: ("[redacted]" if str(k).lower() in audit._SECRET_KEYS else scrub(v))
                    for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [scrub(v) for v in value]
        return value
    return json.dumps(scrub(details or {}), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)


def _random_event(rng: random.Random) -> dict:
    zone = dt.timezone(dt.timedelta(minutes=rng.choice([0, 420, -300, 345])))
    at = dt.datetime(rng.randint(1990, 2090), rng.randint(1, 12), rng.randint(1, 28),
                     rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
                     rng.choice([0, rng.randint(0, 999_999)]), tzinfo=zone)
    return dict(seq=rng.choice([1, rng.randint(1, 10**12)]), at=at, action=_text(rng, 20),
                actor=_text(rng, 30), target=rng.choice([None, _text(rng)]),
                domain_id=rng.choice([None, 0, rng.randint(1, 10**6)]),
                details=_reference_details({_text(rng, 8): _text(rng) for _ in range(3)}),
                prev_hash=rng.choice([audit.GENESIS, hashlib.sha256(
                    _text(rng).encode("utf-8")).hexdigest()]))


def test_hand_written_hash_equals_json_dumps_on_random_events():
    rng = random.Random(20261123)
    for _ in range(3000):
        ev = _random_event(rng)
        assert audit.event_hash(**ev) == _reference(**ev), ev


@pytest.mark.parametrize("odd", [
    dict(domain_id=True),            # a bool is an int to Python, "true" to JSON
    dict(seq=7.0),                   # a float sequence number
    dict(target=12345),              # a target that is not a string
    dict(actor=None),
])
def test_unexpected_types_fall_back_to_json_dumps(odd):
    ev = dict(seq=7, at=dt.datetime(2026, 11, 23, 1, 2, 3, 4, tzinfo=UTC), action="cert.issue",
              actor="user:an", target="issuing:0A", domain_id=3, details="{}",
              prev_hash=audit.GENESIS)
    ev.update(odd)
    assert audit.event_hash(**ev) == _reference(**ev)


def test_export_verifier_agrees_with_the_hand_written_hash():
    spec = importlib.util.spec_from_file_location("verify_audit_export",
                                                  ROOT / "tools" / "verify_audit_export.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rng = random.Random(5)
    for _ in range(300):
        ev = _random_event(rng)
        exported = {"seq": ev["seq"], "at": ev["at"].astimezone(UTC).isoformat(
            timespec="microseconds"), "action": ev["action"], "actor": ev["actor"],
            "target": ev["target"], "domain_id": ev["domain_id"], "details": ev["details"],
            "prev_hash": ev["prev_hash"]}
        assert tool.event_hash(exported) == audit.event_hash(**ev)


def test_canonical_details_unchanged_and_secrets_redacted():
    rng = random.Random(7)
    samples = [None, {}, {"pin": "123456", "nested": {"Password": "x", "ok": [1, {"otp": 2}]}},
               {"when": dt.date(2026, 1, 2), "tuple": (1, "a"), "n": 1.5, "b": False},
               {"Tên": "Nguyễn Thị Ánh Tuyết", "z": None, "a": "\u2028\"\\"}]
    samples += [{_text(rng, 6): rng.choice([_text(rng), rng.randint(-5, 5), None,
                                            {"secret": _text(rng)}, [_text(rng, 4)]])
                 for _ in range(4)} for _ in range(500)]
    for details in samples:
        assert audit.canonical_details(details) == _reference_details(details)
    text = audit.canonical_details(samples[2])
    assert "123456" not in text and '"Password":"[redacted]"' in text
    assert '"otp":"[redacted]"' in text
