"""The key-device state machine: which lifecycle transitions are allowed."""
from __future__ import annotations

from ca.errors import Conflict, InvalidInput
from ca.store.models_tokens import DEVICE_STATES

TERMINAL = frozenset({"retired", "lost", "destroyed"})
_END = {"retired", "lost", "destroyed"}

# new -> initialised -> issued -> locked -> restored -> locked -> ... ; any live state may end.
# `initialised` may be re-initialised in place (a failed enrolment is retried on the same token).
ALLOWED: dict[str, frozenset[str]] = {
    "new": frozenset({"initialised"} | _END),
    "initialised": frozenset({"initialised", "issued"} | _END),
    "issued": frozenset({"locked"} | _END),
    "locked": frozenset({"restored"} | _END),
    "restored": frozenset({"locked"} | _END),
    "retired": frozenset(),
    "lost": frozenset(),
    "destroyed": frozenset(),
}
# States in which the holder's key on the device is in use (certificates count as active).
IN_SERVICE = frozenset({"issued", "locked", "restored"})
# A lost or destroyed device: its keys may be in other hands, so its certificates are revoked.
COMPROMISED = frozenset({"lost", "destroyed"})


def check_state(name: str) -> str:
    if name not in DEVICE_STATES:
        raise InvalidInput(f"unknown device state {name!r}; states: {', '.join(DEVICE_STATES)}",
                           field="state")
    return name


def check_transition(current: str, target: str) -> None:
    """Raise Conflict unless `current` -> `target` is an allowed lifecycle step."""
    check_state(target)
    if target not in ALLOWED[current]:
        allowed = ", ".join(sorted(ALLOWED[current])) or "none (final state)"
        raise Conflict(f"a device in state {current!r} cannot become {target!r} "
                       f"(allowed: {allowed})", field="state", code="bad_transition")
