"""Serial numbers: positive, <= 20 octets, >= 64 random bits, lowercase hex (RFC 5280 4.1.2.2)."""
from __future__ import annotations

import re

import pytest

from ca import serial

DRAWS = 4000


@pytest.fixture(scope="module")
def draws() -> list[int]:
    return [serial.generate() for _ in range(DRAWS)]


def test_positive_and_at_most_20_octets(draws):
    for value in draws:
        assert value > 0
        # DER INTEGER content octets: a leading 0x00 is needed when the top bit is set.
        octets = (value.bit_length() + 8) // 8
        assert octets <= 20, hex(value)


def test_at_least_64_bits_of_randomness(draws):
    assert len(set(draws)) == DRAWS
    assert min(v.bit_length() for v in draws) > 64
    assert max(v.bit_length() for v in draws) <= serial.SERIAL_BITS
    # Each of the 159 bit positions is set in about half of the draws: for a fair bit the count
    # is Binomial(4000, 1/2) with sd 31.6; 6 sd either side is never crossed by chance.
    for bit in range(serial.SERIAL_BITS):
        ones = sum((v >> bit) & 1 for v in draws)
        assert abs(ones - DRAWS / 2) < 6 * 31.6, (bit, ones)
    # Bytes are not biased: every byte value appears in the low 8 octets of the draws.
    seen = {(v >> (8 * i)) & 0xFF for v in draws for i in range(8)}
    assert len(seen) == 256


def test_lowercase_hex_without_separators(draws):
    for value in draws[:200]:
        text = serial.to_hex(value)
        assert re.fullmatch(r"[0-9a-f]+", text)
        assert not text.startswith("0")
        assert serial.parse(text) == value


@pytest.mark.parametrize("text,value", [("0A:1b", 0xA1B), ("0xFF", 0xFF), (" 7f ", 0x7F)])
def test_parse_accepts_common_spellings(text, value):
    assert serial.parse(text) == value


@pytest.mark.parametrize("text", ["", "0", "xyz", "-1", "1" * 41, "12 34"])
def test_parse_refuses(text):
    with pytest.raises(ValueError):
        serial.parse(text)


def test_to_hex_refuses_non_positive():
    with pytest.raises(ValueError):
        serial.to_hex(0)
