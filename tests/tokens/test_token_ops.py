"""PKCS#11 operations on real SoftHSM tokens (initialised in this process on the free slot)."""
from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.errors import Conflict, NotFound, PolicyViolation
from ca.keys import KeySpec
from hsm.token_ops import (CKF_USER_PIN_COUNT_LOW, TokenError, pin_status, random_so_pin)
from tests import factories

SO, PIN = "So-Pin-Test-0001", "246810"


@pytest.fixture
def token(staff_tokens, label):
    free = staff_tokens.free_token()
    assert not free.initialised and free.serial == ""
    info = staff_tokens.init_token(free.slot_id, SO, label)
    staff_tokens.init_user_pin(info.serial, SO, PIN)
    return info


def test_init_reads_serial_and_flags(staff_tokens, token, label):
    assert token.initialised and token.label == label and len(token.serial) == 16
    assert staff_tokens.info(token.serial).user_pin_initialised
    assert pin_status(staff_tokens.info(token.serial).flags) == "ok"
    assert staff_tokens.find(label=label) == staff_tokens.info(token.serial)
    assert len(random_so_pin()) == 16 and random_so_pin() != random_so_pin()


def test_wrong_pins_raise_clear_errors_and_set_flags(staff_tokens, token):
    for _ in range(3):
        with pytest.raises(TokenError) as err:
            staff_tokens.try_login(token.serial, "999999")
        assert err.value.code == "pin_incorrect" and "999999" not in err.value.message
    flags = staff_tokens.info(token.serial).flags
    assert flags & CKF_USER_PIN_COUNT_LOW
    assert pin_status(flags) in ("count-low", "locked")
    assert pin_status(0x40000 | 0x8) == "locked" and pin_status(0x20000 | 0x8) == "final-try"
    # SO resets the PIN (C_InitPIN); the flags clear after a good login.
    staff_tokens.init_user_pin(token.serial, SO, "135790")
    staff_tokens.try_login(token.serial, "135790")
    assert pin_status(staff_tokens.info(token.serial).flags) == "ok"
    with pytest.raises(TokenError) as err:
        staff_tokens.init_user_pin(token.serial, "not-the-so-pin", "135790")
    assert err.value.code == "pin_incorrect"


def test_holder_changes_pin(staff_tokens, token):
    staff_tokens.change_user_pin(token.serial, PIN, "864213")
    staff_tokens.try_login(token.serial, "864213")
    with pytest.raises(TokenError):
        staff_tokens.try_login(token.serial, PIN)


@pytest.mark.parametrize("spec", [KeySpec("rsa", "2048"), KeySpec("ec", "secp256r1")])
def test_key_generated_on_token_and_csr_signed_there(staff_tokens, token, spec):
    key_id = staff_tokens.generate_key(token.serial, PIN, spec, "sig")
    attrs = staff_tokens.key_attributes(token.serial, PIN, key_id)
    assert attrs == {"sensitive": True, "extractable": False, "never_extractable": True,
                     "local": True}
    csr = x509.load_der_x509_csr(staff_tokens.make_csr(token.serial, PIN, key_id, "Nguyễn Văn A"))
    assert csr.is_signature_valid
    assert isinstance(csr.public_key(), rsa.RSAPublicKey if spec.type == "rsa"
                      else ec.EllipticCurvePublicKey)
    with staff_tokens.private_key(token.serial, PIN, key_id) as key:
        with pytest.raises(Exception):
            key.private_bytes(None, None, None)


def test_certificates_written_must_match_the_key(staff_tokens, token, issuance, db):
    from ca.issuance.service import IssueRequest
    from tests.tokens.conftest import holder_id
    key_id = staff_tokens.generate_key(token.serial, PIN, KeySpec("ec", "secp256r1"), "sig")
    other = issuance.issue(IssueRequest(ca="issuing", profile="personal", csr=factories.csr(),
                                        actor="t", subscriber_id=holder_id(db)))
    with pytest.raises(Conflict):
        staff_tokens.store_certificates(token.serial, PIN, key_id, "sig", other.der, [])
    assert staff_tokens.certificates(token.serial) == []
    mine = issuance.issue(IssueRequest(
        ca="issuing", profile="personal", actor="t", subscriber_id=holder_id(db),
        csr=staff_tokens.make_csr(token.serial, PIN, key_id, "x")))
    staff_tokens.store_certificates(token.serial, PIN, key_id, "sig", mine.der, [other.der])
    assert sorted(staff_tokens.certificates(token.serial)) == sorted([mine.der, other.der])


def test_bad_inputs(staff_tokens, token, label):
    with pytest.raises(PolicyViolation):
        staff_tokens.generate_key(token.serial, PIN, KeySpec("rsa", "4096"), "sig")
    with pytest.raises(PolicyViolation):
        staff_tokens.init_token(token.slot_id, SO, "x" * 33)
    with pytest.raises(TokenError) as err:
        staff_tokens.init_token(token.slot_id, "wrong-so-pin", label)
    assert err.value.code == "so_pin_incorrect"
    with pytest.raises(NotFound):
        staff_tokens.find(label="no-such-token-label")
    with pytest.raises(NotFound):
        staff_tokens.info("0000000000000000")
    # Re-initialising with the right SO PIN wipes keys and the user PIN.
    staff_tokens.generate_key(token.serial, PIN, KeySpec("ec", "secp256r1"), "sig")
    again = staff_tokens.init_token(token.slot_id, SO, label)
    assert again.serial == token.serial and not again.user_pin_initialised
