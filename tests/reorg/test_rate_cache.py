"""The dry run's HSM rate: measured once per process and reused for RATE_MAX_AGE seconds (a dry
run from the page or the API then signs nothing), and the figures say when it was measured."""
from __future__ import annotations

import datetime as dt

import pytest

from ca.reorg import throttle
from ca.reorg.dryrun import dry_run
from ca.reorg.plans import create_plan
from ca.reorg.throttle import RATE_MAX_AGE, MeasuredRate, ca_sign_rate, forget_rates
from ca.store.models_reorg import ReorgPlan


@pytest.fixture(autouse=True)
def no_cached_rates():
    forget_rates()
    yield
    forget_rates()


class Mono:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def signatures(key_store, monkeypatch) -> list[int]:
    """Counts the measurements that really sign in the HSM."""
    calls: list[int] = []
    real = throttle.measure_sign_rate

    def counting(key, seconds=0.5):
        calls.append(1)
        return real(key, seconds)
    monkeypatch.setattr(throttle, "measure_sign_rate", counting)
    return calls


def test_a_measurement_is_reused_within_its_age_limit(db, key_store, monkeypatch):
    calls = signatures(key_store, monkeypatch)
    mono = Mono()
    first = ca_sign_rate(db, key_store, seconds=0.1, monotonic=mono)
    assert isinstance(first, MeasuredRate) and first > 0 and not first.cached
    assert len(calls) == 1
    assert abs((dt.datetime.now(dt.timezone.utc) - first.measured_at).total_seconds()) < 60
    mono.t += RATE_MAX_AGE - 1
    again = ca_sign_rate(db, key_store, seconds=0.05, monotonic=mono)  # shorter: reuse
    assert again.cached and float(again) == float(first)
    assert again.measured_at == first.measured_at and len(calls) == 1
    # a longer measurement than the cached one is asked for: measure
    longer = ca_sign_rate(db, key_store, seconds=0.2, monotonic=mono)
    assert not longer.cached and len(calls) == 2
    # too old: measure again
    mono.t += RATE_MAX_AGE + 1
    fresh = ca_sign_rate(db, key_store, seconds=0.1, monotonic=mono)
    assert not fresh.cached and len(calls) == 3
    # max_age=0: always measure
    assert not ca_sign_rate(db, key_store, seconds=0.1, max_age=0, monotonic=mono).cached
    assert len(calls) == 4


def test_an_unknown_ca_is_an_error_not_a_cached_rate(db, key_store):
    from sqlalchemy.exc import NoResultFound
    with pytest.raises(NoResultFound):
        ca_sign_rate(db, key_store, ca="khong-co", seconds=0.05)


def test_the_dry_run_says_when_the_rate_was_measured(db, small_world, preparer, clock, key_store):
    with db.transaction() as s:
        plan = create_plan(s, preparer, name="thử", clock=clock, items=[
            {"kind": "merge_province", "sources": ["hagiang"], "target": "tuyenquang"}])
    measured = ca_sign_rate(db, key_store, seconds=0.1)
    with db.transaction() as s:
        out = dry_run(s, preparer, plan.id, clock=clock, hsm_rate=measured)
    assert out["hsm_rate_source"] == "measured"
    assert out["hsm_rate_measured_at"] == measured.measured_at.isoformat()
    assert 0 <= out["hsm_rate_age_seconds"] < 60
    assert out["hsm_rate"] == round(float(measured), 1)
    cached = ca_sign_rate(db, key_store, seconds=0.1)
    assert cached.cached
    with db.transaction() as s:
        out2 = dry_run(s, preparer, plan.id, clock=clock, hsm_rate=cached)
        stored = s.get(ReorgPlan, plan.id)
        assert stored.hsm_rate == float(measured)
        assert stored.dry_run["hsm_rate_source"] == "cached"
    assert out2["hsm_rate_source"] == "cached"
    assert out2["hsm_rate_measured_at"] == out["hsm_rate_measured_at"]
    # a rate given by the operator (--hsm-rate) is labelled as such, without a time
    with db.transaction() as s:
        out3 = dry_run(s, preparer, plan.id, clock=clock, hsm_rate=250.0)
    assert out3["hsm_rate_source"] == "given" and out3["hsm_rate_measured_at"] is None
    assert out3["estimated_seconds"] == round(out3["changes"] / (250.0 * 0.5), 3)
