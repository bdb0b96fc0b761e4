"""Certificate serial numbers: random, positive, at most 20 octets, shown as lowercase hex."""
from __future__ import annotations

import secrets

# RFC 5280 4.1.2.2: positive, at most 20 octets. CA/B BR: at least 64 bits from a CSPRNG.
# 159 random bits keep the DER INTEGER within 20 octets without a leading 0x00 octet.
SERIAL_BITS = 159
MIN_ENTROPY_BITS = 64


def generate() -> int:
    while True:
        value = secrets.randbits(SERIAL_BITS)
        # Refuse values so small that they would carry under 64 bits of entropy in practice.
        if value >> (MIN_ENTROPY_BITS) != 0:
            return value


def to_hex(value: int) -> str:
    if value <= 0:
        raise ValueError("serial numbers are positive")
    return format(value, "x")


def parse(text: str) -> int:
    """Accept lowercase/uppercase hex, optionally with ':' separators or a 0x prefix."""
    cleaned = text.strip().lower().replace(":", "")
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    if not cleaned or len(cleaned) > 40 or any(c not in "0123456789abcdef" for c in cleaned):
        raise ValueError(f"not a certificate serial number: {text!r}")
    value = int(cleaned, 16)
    if value <= 0:
        raise ValueError("serial numbers are positive")
    return value
