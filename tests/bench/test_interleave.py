"""bench/interleave.py: the ratio of a sliced case to the raw rate measured around each slice."""
from __future__ import annotations

import pytest

from bench.interleave import interleaved


def test_ratio_weighs_each_slice_by_the_raw_rate_around_it():
    raws = iter([100.0, 300.0, 100.0])  # the VM is 3x faster during the first slice's end
    parts = [{"n": 40, "seconds": 1.0}, {"n": 10, "seconds": 0.5}]
    res = interleaved(lambda i: parts[i], lambda: next(raws), 2)
    # windows: 1.0 * (100+300)/2 = 200 signatures, 0.5 * (300+100)/2 = 100 signatures
    assert res["ratio"] == pytest.approx(50 / 300)
    assert res["slice_ratios"] == pytest.approx([40 / 200, 10 / 100])
    assert res["rate"] == pytest.approx(50 / 1.5)
    assert res["refs"] == [100.0, 300.0, 100.0]
    assert res["raw_mean"] == pytest.approx(500 / 3)


def test_probe_runs_before_the_first_and_after_every_slice():
    order = []
    interleaved(lambda i: order.append(f"slice{i}") or {"n": 1, "seconds": 1.0},
                lambda: order.append("raw") or 10.0, 3)
    assert order == ["raw", "slice0", "raw", "slice1", "raw", "slice2", "raw"]


def test_no_slices_is_an_error():
    with pytest.raises(ValueError):
        interleaved(lambda i: {"n": 0, "seconds": 0.0}, lambda: 1.0, 0)
