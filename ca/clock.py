"""Time as a dependency: aware UTC only."""
from __future__ import annotations

import datetime as dt
from typing import Protocol

UTC = dt.timezone.utc


def require_aware(value: dt.datetime, what: str = "datetime") -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {value!r})")
    return value.astimezone(UTC)


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)


class FixedClock:
    """A clock for tests: stands still until moved."""

    def __init__(self, at: dt.datetime) -> None:
        self._at = require_aware(at, "FixedClock time")

    def now(self) -> dt.datetime:
        return self._at

    def advance(self, **delta: float) -> dt.datetime:
        self._at = self._at + dt.timedelta(**delta)
        return self._at

    def set(self, at: dt.datetime) -> None:
        self._at = require_aware(at, "FixedClock time")
