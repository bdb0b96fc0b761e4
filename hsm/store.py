"""The KeyStore port over a PKCS#11 token, with loaded keys cached per process."""
from __future__ import annotations

import threading

from ca.keys import KeySpec
from hsm import keygen, keys
from hsm.config import HsmConfig
from hsm.pool import SessionPool


class HsmKeyStore:
    def __init__(self, config: HsmConfig) -> None:
        self.config = config
        self.pool = SessionPool(config)
        self._cache: dict[bytes, object] = {}
        self._lock = threading.Lock()

    def generate(self, spec: KeySpec, label: str):
        key = keygen.generate(self.pool, spec, label)
        with self._lock:
            self._cache[key.key_id] = key
        return key

    def load(self, key_id: bytes, label: str = ""):
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        key = keys.load_key(self.pool, key_id, label)
        with self._lock:
            self._cache[key_id] = key
        return key

    def destroy(self, key_id: bytes) -> None:
        keygen.destroy(self.pool, key_id)
        with self._lock:
            self._cache.pop(key_id, None)

    def attributes(self, key_id: bytes) -> dict[str, bool]:
        return keygen.key_attributes(self.pool, key_id)

    def close(self) -> None:
        self.pool.close()
