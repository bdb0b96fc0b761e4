"""Remote (RSSP/HSM) key PINs: argon2 at rest, lock after wrong tries, reset by one-time code."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from ca.errors import Conflict, InvalidInput, PolicyViolation
from ca.store.models_tokens import KeyDevice, RemoteKeyPin
from ca.tokens import registry, remote_pin, unblock as codes
from tests.tokens.conftest import holder_id


def _remote(db, clock) -> int:
    with db.transaction() as s:
        dev = registry.register_device(s, holder_id=holder_id(s), device_type="RSSP",
                                       label="rssp-key", serial="RSSP-0001", actor="officer",
                                       at=clock.now())
        registry.transition(s, dev, "initialised", actor="officer", at=clock.now())
        registry.transition(s, dev, "issued", actor="officer", at=clock.now())
        remote_pin.set_initial_pin(s, dev.id, "80246813", actor="holder", at=clock.now())
        return dev.id


def test_pin_is_an_argon2_hash_and_verifies(db, clock):
    dev = _remote(db, clock)
    with db.transaction() as s:
        row = s.execute(select(RemoteKeyPin)).scalar_one()
        assert row.pin_hash.startswith("$argon2id$") and "80246813" not in row.pin_hash
        with pytest.raises(Conflict):
            remote_pin.set_initial_pin(s, dev, "80246813", actor="h", at=clock.now())
    remote_pin.verify_pin(db, clock, dev, "80246813", actor="holder")


def test_lock_then_reset_with_one_time_code(db, clock):
    dev = _remote(db, clock)
    for i in range(remote_pin.MAX_FAILURES):
        with pytest.raises(remote_pin.RemotePinRefused) as err:
            remote_pin.verify_pin(db, clock, dev, "999999", actor="holder")
    assert err.value.code == "remote_pin_locked"
    with pytest.raises(remote_pin.RemotePinRefused):  # even the right PIN, now
        remote_pin.verify_pin(db, clock, dev, "80246813", actor="holder")
    with db.transaction() as s:
        assert s.get(KeyDevice, dev).state == "locked"
        code = codes.issue_authorisation(s, device_id=dev, actor="approver",
                                         at=clock.now()).code
    with pytest.raises(PolicyViolation):  # a bad new PIN does not spend the code
        remote_pin.reset_pin(db, clock, device_id=dev, code=code, new_pin="000000", actor="h")
    remote_pin.reset_pin(db, clock, device_id=dev, code=code, new_pin="57913579", actor="h")
    remote_pin.verify_pin(db, clock, dev, "57913579", actor="holder")
    with pytest.raises(remote_pin.RemotePinRefused) as err:
        remote_pin.verify_pin(db, clock, dev, "80246813", actor="holder")
    assert err.value.code == "remote_pin_wrong"
    with db.transaction() as s:
        assert s.get(KeyDevice, dev).state == "restored"
    with pytest.raises(codes.UnblockRefused):
        remote_pin.reset_pin(db, clock, device_id=dev, code=code, new_pin="57913570", actor="h")


def test_token_codes_do_not_reset_remote_pins_and_tokens_have_no_remote_pin(db, clock):
    with db.transaction() as s:
        tok = registry.register_device(s, holder_id=holder_id(s), device_type="TOKEN",
                                       label="t", actor="o", at=clock.now())
        with pytest.raises(InvalidInput):
            remote_pin.set_initial_pin(s, tok.id, "80246813", actor="h", at=clock.now())
