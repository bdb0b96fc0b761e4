"""HSM capacity: the raw signing rate of the issuing key, and a token bucket at a share of it."""
from __future__ import annotations

import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from sqlalchemy import select

from ca.ports import KeyStore
from ca.store.database import Database
from ca.store.models import CertificateAuthority


def measure_sign_rate(key, seconds: float = 0.5) -> float:
    """Signatures/s of `key` (an HSM key that looks like a cryptography key), one thread."""
    msg = b"x" * 64
    if isinstance(key, ec.EllipticCurvePrivateKey):
        def one():
            key.sign(msg, ec.ECDSA(hashes.SHA256()))
    else:
        def one():
            key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    one()  # warm the session
    n, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        one()
        n += 1
    return n / (time.perf_counter() - t0)


def ca_sign_rate(db: Database, keys: KeyStore, ca: str = "issuing",
                 seconds: float = 0.5) -> float:
    with db.transaction() as s:
        row = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == ca)).scalar_one()
        key_id, label = row.key_id, row.key_label
    return measure_sign_rate(keys.load(bytes.fromhex(key_id), label), seconds)


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; take() sleeps until one is free.
    The worker takes one token per HSM signature, so the reorganisation never uses more than
    its share of the HSM and ordinary issuance and OCSP keep the rest."""

    def __init__(self, rate: float, burst: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("the throttle rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._mono, self._sleep = monotonic, sleep
        self._tokens = self.burst
        self._last = monotonic()
        self.waited = 0.0

    def take(self, n: float = 1.0) -> None:
        while True:
            now = self._mono()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= n:
                self._tokens -= n
                return
            wait = (n - self._tokens) / self.rate
            self.waited += wait
            self._sleep(wait)
