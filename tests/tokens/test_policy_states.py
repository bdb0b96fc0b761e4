"""PIN policy and the device state machine (pure rules)."""
from __future__ import annotations

import pytest

from ca.errors import Conflict, InvalidInput, PolicyViolation
from ca.tokens.pin_policy import check_pin
from ca.tokens.states import ALLOWED, check_transition


@pytest.mark.parametrize("pin", ["246810", "1357924680", "0000000000000009", "975318"])
def test_good_pins(pin):
    assert check_pin(pin) == pin


@pytest.mark.parametrize("pin,why", [
    ("12345", "6 to 16"), ("12345678901234567", "6 to 16"), ("", "digits only"),
    ("11111111", "repeated"), ("123456", "sequence"), ("987654", "sequence"),
    ("890123", "sequence"), ("24681a", "digits only"), ("２４６８１０", "digits only"),
    (" 246810", "digits only"),
])
def test_bad_pins_are_refused_without_echoing_them(pin, why):
    with pytest.raises(PolicyViolation) as err:
        check_pin(pin)
    assert why in err.value.message
    assert err.value.code == "pin_policy"
    if len(pin) >= 6:
        assert pin not in err.value.message


def test_lifecycle_allows_only_the_listed_steps():
    check_transition("new", "initialised")
    check_transition("initialised", "issued")
    check_transition("issued", "locked")
    check_transition("locked", "restored")
    check_transition("restored", "locked")
    for end in ("retired", "lost", "destroyed"):
        check_transition("issued", end)
        assert ALLOWED[end] == frozenset()
    for bad in [("new", "issued"), ("issued", "restored"), ("locked", "issued"),
                ("lost", "issued"), ("destroyed", "new"), ("retired", "initialised"),
                ("issued", "new")]:
        with pytest.raises(Conflict) as err:
            check_transition(*bad)
        assert err.value.code == "bad_transition"
    with pytest.raises(InvalidInput):
        check_transition("issued", "stolen")
