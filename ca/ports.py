"""Small interfaces the core needs from the outside world (implemented in hsm/, tests, ...)."""
from __future__ import annotations

from typing import Protocol

from ca.keys import KeySpec


class KeyStore(Protocol):
    """Private keys that never leave their store; objects returned behave like cryptography
    private keys (their sign() runs in the store) and carry a `key_id` (bytes)."""

    def generate(self, spec: KeySpec, label: str): ...

    def load(self, key_id: bytes, label: str = ""): ...

    def destroy(self, key_id: bytes) -> None: ...

    def attributes(self, key_id: bytes) -> dict[str, bool]: ...
