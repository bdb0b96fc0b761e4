"""One-time unblock authorisations: single use, expiry, binding to the device, rate limit."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from ca.errors import Conflict, InvalidInput
from ca.store.models import AuditEvent
from ca.store.models_tokens import KeyDevice, UnblockAttempt, UnblockAuthorisation
from ca.tokens import registry, unblock as codes
from tests.tokens.conftest import holder_id


def _device(db, clock, serial="A1B2C3D4", state="issued", device_type="TOKEN") -> int:
    with db.transaction() as s:
        dev = registry.register_device(s, holder_id=holder_id(s), device_type=device_type,
                                       label="tok", serial=serial, actor="officer", at=clock.now())
        for step in {"issued": ["initialised", "issued"], "new": [],
                     "initialised": ["initialised"], "lost": ["lost"]}[state]:
            registry.transition(s, dev, step, actor="officer", at=clock.now())
        return dev.id


def _issue(db, clock, device_id, **kw):
    with db.transaction() as s:
        return codes.issue_authorisation(s, device_id=device_id, actor="approver", at=clock.now(),
                                         request_ref="req-7", **kw)


def _redeem(db, clock, code, serial="A1B2C3D4"):
    return codes.redeem(db, clock, code=code, device_serial=serial, actor="holder")


def test_code_is_random_hashed_at_rest_and_single_use(db, clock):
    dev = _device(db, clock)
    issued = _issue(db, clock, dev)
    assert re.fullmatch(r"([A-Z2-9]{4}-){4}[A-Z2-9]{4}", issued.code)
    assert issued.expires_at == clock.now() + dt.timedelta(minutes=15)
    with db.transaction() as s:
        row = s.get(UnblockAuthorisation, issued.authorisation_id)
        assert row.code_hash == codes.code_hash(issued.code) != issued.code
        assert issued.code.replace("-", "") not in row.code_hash
        assert s.get(KeyDevice, dev).state == "locked"
        audit = " ".join(e.details for e in s.execute(select(AuditEvent)).scalars())
        assert issued.code not in audit and issued.code.replace("-", "") not in audit
    redeemed, _ = _redeem(db, clock, issued.code.lower().replace("-", " "))
    assert redeemed.device_id == dev and redeemed.request_ref == "req-7"
    with pytest.raises(codes.UnblockRefused) as err:
        _redeem(db, clock, issued.code)
    assert err.value.code == "unblock_code_used"


def test_wrong_expired_other_device_and_withdrawn(db, clock):
    dev = _device(db, clock)
    other = _device(db, clock, serial="FFFF0000")
    issued = _issue(db, clock, dev)
    with pytest.raises(codes.UnblockRefused) as err:
        _redeem(db, clock, codes.new_code())
    assert err.value.code == "unblock_code_wrong"
    with pytest.raises(codes.UnblockRefused) as err:
        _redeem(db, clock, issued.code, serial="FFFF0000")
    assert err.value.code == "unblock_code_other_device"
    assert "another device" in err.value.message
    with pytest.raises(InvalidInput):
        _redeem(db, clock, "not-a-code")
    # A newer code withdraws the older one.
    newer = _issue(db, clock, dev)
    with pytest.raises(codes.UnblockRefused) as err:
        _redeem(db, clock, issued.code)
    assert err.value.code == "unblock_code_withdrawn"
    clock.advance(minutes=16)
    with pytest.raises(codes.UnblockRefused) as err:
        _redeem(db, clock, newer.code)
    assert err.value.code == "unblock_code_expired"
    with db.transaction() as s:
        assert s.get(UnblockAuthorisation, newer.authorisation_id).consumed_at is None
        outcomes = [a.outcome for a in s.execute(select(UnblockAttempt).order_by(
            UnblockAttempt.id)).scalars()]
    assert outcomes == ["wrong", "mismatch", "reused", "expired"]
    assert other


def test_repeated_failures_are_rate_limited_and_alerted(db, clock):
    dev = _device(db, clock)
    issued = _issue(db, clock, dev)
    for _ in range(codes.MAX_FAILURES):
        with pytest.raises(codes.UnblockRefused):
            _redeem(db, clock, codes.new_code())
    # Even the right code is now refused: limited, and the outstanding code was withdrawn.
    with pytest.raises(codes.UnblockRefused) as err:
        _redeem(db, clock, issued.code)
    assert err.value.code == "unblock_rate_limited"
    with db.transaction() as s:
        actions = [e.action for e in s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars()]
        assert actions.count("device.unblock.alert") == 1
        assert actions.count("device.unblock.failed") == codes.MAX_FAILURES
        assert s.get(UnblockAuthorisation, issued.authorisation_id).cancelled_at is not None
    clock.advance(minutes=20)
    with pytest.raises(codes.UnblockRefused) as err:
        _redeem(db, clock, issued.code)
    assert err.value.code == "unblock_code_withdrawn"
    fresh = _issue(db, clock, dev)
    assert _redeem(db, clock, fresh.code)[0].device_id == dev


def test_issue_refuses_devices_not_in_service_and_bad_ttl(db, clock):
    for state in ("new", "initialised", "lost"):
        dev = _device(db, clock, serial=None if state == "new" else f"S-{state}", state=state)
        with pytest.raises(Conflict):
            _issue(db, clock, dev)
    dev = _device(db, clock)
    with pytest.raises(InvalidInput):
        _issue(db, clock, dev, ttl=dt.timedelta(days=2))
    with db.transaction() as s:
        assert not s.execute(select(UnblockAuthorisation)).first()


def test_verify_hook_failure_does_not_consume(db, clock):
    dev = _device(db, clock)
    issued = _issue(db, clock, dev)

    def refuse(session, device):
        raise Conflict("not the registered token", code="device_mismatch")
    with pytest.raises(Conflict):
        codes.redeem(db, clock, code=issued.code, device_serial="A1B2C3D4", actor="x",
                     verify=refuse)
    with db.transaction() as s:
        assert s.get(UnblockAuthorisation, issued.authorisation_id).consumed_at is None
    assert _redeem(db, clock, issued.code)[0].device_id == dev


def test_two_redeems_at_once_only_one_wins(db, clock):
    import threading
    dev = _device(db, clock)
    issued = _issue(db, clock, dev)
    results, barrier = [], threading.Barrier(2)

    def attempt():
        barrier.wait()
        try:
            _redeem(db, clock, issued.code)
            results.append("ok")
        except codes.UnblockRefused as exc:
            results.append(exc.code)
    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["ok", "unblock_code_used"]
