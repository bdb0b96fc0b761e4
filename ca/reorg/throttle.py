"""HSM capacity: the raw signing rate of the issuing key, and a token bucket at a share of it."""
from __future__ import annotations

import datetime as dt
import os
import threading
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


RATE_MAX_AGE = 600.0  # seconds a measured rate is reused in the same process


class MeasuredRate(float):
    """A signing rate (signatures/s) that knows when and how it was measured: `measured_at`
    (UTC), `seconds` (length of the measurement) and `cached` (True when this call reused an
    earlier measurement of the same process instead of signing)."""

    measured_at: dt.datetime
    seconds: float
    cached: bool

    def __new__(cls, rate: float, measured_at: dt.datetime, seconds: float,
                cached: bool = False) -> "MeasuredRate":
        obj = super().__new__(cls, rate)
        obj.measured_at, obj.seconds, obj.cached = measured_at, seconds, cached
        return obj

    def __reduce__(self):  # pickling and copying keep the metadata
        return (MeasuredRate, (float(self), self.measured_at, self.seconds, self.cached))


# (pid, key id, label) -> (monotonic time of the measurement, MeasuredRate). Per process: a
# forked child measures again (its HSM sessions are its own).
_RATES: dict[tuple, tuple[float, MeasuredRate]] = {}
_RATES_LOCK = threading.Lock()


def forget_rates() -> None:
    """Drop every cached measurement of this process (tests, or after an HSM change)."""
    with _RATES_LOCK:
        _RATES.clear()


def ca_sign_rate(db: Database, keys: KeyStore, ca: str = "issuing",
                 seconds: float = 0.5, max_age: float | None = RATE_MAX_AGE,
                 monotonic: Callable[[], float] = time.monotonic) -> MeasuredRate:
    """The raw signing rate of the CA's key. A measurement of the same key made by this process
    less than `max_age` seconds ago, and at least as long as `seconds`, is reused (a dry run
    from the page or the API then costs no HSM time); `max_age=0` or None always measures.
    The result says when it was measured (MeasuredRate.measured_at / .cached)."""
    with db.transaction() as s:
        row = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == ca)).scalar_one()
        key_id, label = row.key_id, row.key_label
    cache_key = (os.getpid(), key_id, label)
    if max_age:
        with _RATES_LOCK:
            hit = _RATES.get(cache_key)
        if hit is not None and monotonic() - hit[0] < max_age and hit[1].seconds >= seconds:
            r = hit[1]
            return MeasuredRate(float(r), r.measured_at, r.seconds, cached=True)
    t = monotonic()
    rate = MeasuredRate(measure_sign_rate(keys.load(bytes.fromhex(key_id), label), seconds),
                        dt.datetime.now(dt.timezone.utc).replace(microsecond=0), seconds)
    with _RATES_LOCK:
        _RATES[cache_key] = (t, rate)
    return rate


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
