"""The workstation procedures in-process: failures leave nothing half-done; unblock checks the
token's identity (serial and certificate) against the approved request."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from ca.errors import CAError, Conflict, HsmUnavailable, PolicyViolation
from ca.keys import KeySpec
from ca.store.models import Certificate
from ca.store.models_tokens import KeyDevice, SoPinEscrow, UnblockAuthorisation
from ca.tokens import escrow, unblock as codes
from ca.tokens.workstation import enrol, unblock
from hsm.token_ops import StaffToken, TokenError, random_so_pin

P256 = KeySpec("ec", "secp256r1")


class FailingToken(StaffToken):
    """A real token whose `fail_at` step raises as a PKCS#11 failure would."""

    def __init__(self, base: StaffToken, fail_at: str) -> None:
        self.lib, self.fail_at = base.lib, fail_at

    def store_certificates(self, *a, **k):
        if self.fail_at == "store_certificates":
            raise TokenError("token operation failed: PKCS#11 error DeviceMemory",
                             code="pkcs11_error")
        return super().store_certificates(*a, **k)

    def generate_key(self, *a, **k):
        if self.fail_at == "generate_key":
            raise TokenError("token operation failed: PKCS#11 error DeviceError",
                             code="pkcs11_error")
        return super().generate_key(*a, **k)


def _enrol(tokens, gateway, label, **kw):
    args = dict(subscriber="staff.hanoi.1", label=label, user_pin="246810", key_spec=P256,
                random_so_pin=random_so_pin)
    args.update(kw)
    return enrol(tokens, gateway, **args)


def test_pin_policy_failure_touches_nothing(db, staff_tokens, gateway, label):
    before = len(staff_tokens.tokens())
    with pytest.raises(PolicyViolation):
        _enrol(staff_tokens, gateway, label, user_pin="111111")
    with db.transaction() as s:
        assert s.execute(select(KeyDevice)).first() is None
    assert len(staff_tokens.tokens()) == before


def test_failure_after_issuance_wipes_token_and_revokes(db, staff_tokens, gateway, label):
    with pytest.raises(CAError):
        _enrol(FailingToken(staff_tokens, "store_certificates"), gateway, label)
    with db.transaction() as s:
        dev = s.execute(select(KeyDevice)).scalar_one()
        assert dev.state == "initialised"
        certs = s.execute(select(Certificate).where(Certificate.state == "issued",
                                                    Certificate.subscriber_id == dev.holder_id,
                                                    Certificate.revoked_at.isnot(None))).scalars().all()
        assert [c.revocation_reason for c in certs] == ["cessationOfOperation"]
        serial = dev.serial
    info = staff_tokens.info(serial)
    assert info.initialised and not info.user_pin_initialised  # wiped, re-initialisable
    assert staff_tokens.certificates(serial) == []
    # Re-run on the same token: the escrowed SO PIN re-initialises it; enrolment completes.
    done = _enrol(staff_tokens, gateway, label, token_serial=serial)
    assert done.serial == serial
    with db.transaction() as s:
        assert s.get(KeyDevice, done.device_id).state == "issued"
        assert s.execute(select(KeyDevice)).scalars().all() == [s.get(KeyDevice, done.device_id)]


def test_failure_before_issuance_issues_nothing(db, staff_tokens, gateway, label):
    with db.transaction() as s:
        before = s.execute(select(Certificate)).scalars().all()
    with pytest.raises(CAError):
        _enrol(FailingToken(staff_tokens, "generate_key"), gateway, label)
    with db.transaction() as s:
        assert len(s.execute(select(Certificate)).scalars().all()) == len(before)
        assert s.execute(select(KeyDevice)).scalar_one().state == "initialised"


def test_unknown_subscriber_fails_before_the_token_is_touched(db, staff_tokens, gateway, label):
    free = staff_tokens.free_token()
    with pytest.raises(CAError):
        _enrol(staff_tokens, gateway, label, subscriber="nobody.here")
    assert staff_tokens.free_token().slot_id == free.slot_id
    with db.transaction() as s:
        assert s.execute(select(SoPinEscrow)).first() is None


def test_unblock_refuses_a_token_that_is_not_the_registered_one(db, clock, staff_tokens,
                                                                gateway, label):
    a = _enrol(staff_tokens, gateway, label)
    b = _enrol(staff_tokens, gateway, label + "b", subscriber="staff.hanoi.2")
    with db.transaction() as s:
        code = codes.issue_authorisation(s, device_id=a.device_id, actor="approver",
                                         at=clock.now()).code
    # The code is for token A; token B is presented.
    with pytest.raises(codes.UnblockRefused) as err:
        unblock(staff_tokens, gateway, code=code, new_pin="135790", label=label + "b",
                random_so_pin=random_so_pin)
    assert err.value.code == "unblock_code_other_device"
    # A token claiming A's serial but without A's certificate (Dogtag's bug) is refused too.
    with pytest.raises(Conflict) as err:
        gateway.redeem_unblock(code=code, serial=a.serial, certificates=[])
    assert err.value.code == "device_mismatch"
    with db.transaction() as s:
        assert s.execute(select(UnblockAuthorisation)).scalar_one().consumed_at is None
    # The right token works; its new PIN is set and the old one is gone.
    done = unblock(staff_tokens, gateway, code=code, new_pin="135790", label=label,
                   random_so_pin=random_so_pin)
    assert done.so_pin_rotated
    staff_tokens.try_login(a.serial, "135790")
    with pytest.raises(TokenError):
        staff_tokens.try_login(a.serial, "246810")
    with pytest.raises(PolicyViolation):
        unblock(staff_tokens, gateway, code=code, new_pin="123456", label=label,
                random_so_pin=random_so_pin)
    assert b.serial != a.serial


def _so_pin(db, clock, sealer, device_id, pending=False):
    with db.transaction() as s:
        return escrow.release_so_pin(s, s.get(KeyDevice, device_id), sealer, actor="test",
                                     at=clock.now(), purpose="test", with_pending=pending)


class LosesConfirmation:
    """GovCA reachable until the final confirmation of an SO-PIN rotation is lost."""

    def __init__(self, gateway) -> None:
        self.gateway = gateway

    def __getattr__(self, name):
        return getattr(self.gateway, name)

    def unblock_done(self, **kw):
        if kw.get("so_pin_on_token") == "pending":
            raise HsmUnavailable("GovCA did not answer", code="gateway_down")
        return self.gateway.unblock_done(**kw)


def test_so_pin_is_rotated_after_unblock_even_if_the_confirmation_is_lost(
        db, clock, staff_tokens, gateway, sealer, label):
    enrolled = _enrol(staff_tokens, gateway, label)
    first = _so_pin(db, clock, sealer, enrolled.device_id)
    with db.transaction() as s:
        code = codes.issue_authorisation(s, device_id=enrolled.device_id, actor="approver",
                                         at=clock.now()).code
    with pytest.raises(HsmUnavailable):
        unblock(staff_tokens, LosesConfirmation(gateway), code=code, new_pin="135790",
                label=label, random_so_pin=random_so_pin)
    # The token got the staged SO PIN; GovCA still lists the old one as current.
    current, staged = _so_pin(db, clock, sealer, enrolled.device_id, pending=True)
    assert current == first and staged and staged != first
    with pytest.raises(TokenError):
        staff_tokens.init_user_pin(enrolled.serial, first, "135790")
    staff_tokens.try_login(enrolled.serial, "135790")  # the holder's PIN was set all the same
    # The next restore works: the staged SO PIN is tried, committed, then rotated again.
    with db.transaction() as s:
        code = codes.issue_authorisation(s, device_id=enrolled.device_id, actor="approver",
                                         at=clock.now()).code
    done = unblock(staff_tokens, gateway, code=code, new_pin="975310", label=label,
                   random_so_pin=random_so_pin)
    assert done.so_pin_rotated
    latest, none = _so_pin(db, clock, sealer, enrolled.device_id, pending=True)
    assert none is None and latest not in (first, staged)
    staff_tokens.init_user_pin(enrolled.serial, latest, "975310")  # escrow matches the token
    with pytest.raises(TokenError):
        staff_tokens.init_user_pin(enrolled.serial, staged, "975310")
    with db.transaction() as s:
        assert s.get(KeyDevice, enrolled.device_id).state == "restored"


def test_rotation_calls_need_a_fresh_unblock(db, clock, staff_tokens, gateway, label):
    enrolled = _enrol(staff_tokens, gateway, label)
    with pytest.raises(Conflict) as err:
        gateway.stage_so_pin(device_id=enrolled.device_id, serial=enrolled.serial,
                             authorisation_id=1, so_pin="attacker-chosen-pin")
    assert err.value.code == "no_unblock_in_progress"


class FailsOnce:
    """GovCA that fails the named call once (as a dropped connection would)."""

    def __init__(self, gateway, method: str) -> None:
        self.gateway, self.method, self.failed = gateway, method, False

    def __getattr__(self, name):
        call = getattr(self.gateway, name)
        if name != self.method or self.failed:
            return call

        def fail(**kw):
            self.failed = True
            raise HsmUnavailable("GovCA did not answer", code="gateway_down")
        return fail


def test_token_initialised_but_not_recorded_can_be_enrolled_again(db, staff_tokens, gateway,
                                                                  label):
    flaky = FailsOnce(gateway, "initialised")
    with pytest.raises(HsmUnavailable):
        _enrol(staff_tokens, flaky, label)
    with db.transaction() as s:
        dev = s.execute(select(KeyDevice)).scalar_one()
        assert dev.state == "new" and dev.serial  # the serial the token got is recorded
        serial = dev.serial
    assert staff_tokens.info(serial).initialised
    done = _enrol(staff_tokens, flaky, label, token_serial=serial)
    with db.transaction() as s:
        assert s.get(KeyDevice, done.device_id).state == "issued"
        assert done.device_id == dev.id


def test_other_holders_token_cannot_be_reinitialised(db, staff_tokens, gateway, label):
    flaky = FailsOnce(gateway, "issue")
    with pytest.raises(HsmUnavailable):
        _enrol(staff_tokens, flaky, label)
    with db.transaction() as s:
        serial = s.execute(select(KeyDevice)).scalar_one().serial
    with pytest.raises(Conflict) as err:
        _enrol(staff_tokens, gateway, label, token_serial=serial, subscriber="staff.hanoi.2")
    assert err.value.code == "holder_mismatch"
