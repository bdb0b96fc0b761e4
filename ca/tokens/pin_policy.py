"""PIN policy for token and remote-key PINs: 6-16 digits, not one repeated digit, no sequence."""
from __future__ import annotations

from ca.errors import PolicyViolation

MIN_LENGTH, MAX_LENGTH = 6, 16


def check_pin(pin: str, *, field: str = "pin") -> str:
    """Return the PIN if it satisfies the policy; otherwise a PolicyViolation that never
    contains the PIN itself."""
    if not isinstance(pin, str):
        raise PolicyViolation("the PIN must be text made of digits", field=field, code="pin_policy")
    if not pin.isascii() or not pin.isdigit():
        raise PolicyViolation("the PIN must contain digits only (0-9)", field=field,
                              code="pin_policy")
    if not MIN_LENGTH <= len(pin) <= MAX_LENGTH:
        raise PolicyViolation(f"the PIN must have {MIN_LENGTH} to {MAX_LENGTH} digits "
                              f"(it has {len(pin)})", field=field, code="pin_policy")
    if len(set(pin)) == 1:
        raise PolicyViolation("the PIN cannot be one digit repeated", field=field,
                              code="pin_policy")
    steps = {(int(b) - int(a)) % 10 for a, b in zip(pin, pin[1:])}
    if steps in ({1}, {9}):
        raise PolicyViolation("the PIN cannot be a simple sequence of consecutive digits",
                              field=field, code="pin_policy")
    return pin
