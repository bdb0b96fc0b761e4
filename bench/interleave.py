"""A case measured in slices, the raw signing rate measured before the first and after every
slice: the ratio to raw of a case on a VM whose speed changes from one second to the next.

On the project VM the same CPU-bound loop takes 7 ms or 15 ms depending on the 10-ms window it
runs in, and 65 ms or 138 ms a few seconds apart (docs/performance.md, "Measuring on this VM"):
a raw rate measured once at the start of a run and a case measured a minute later can differ
by 2x for no reason of their own. Here each slice of the case is set beside the raw rate just
before and just after it, and the ratio is

    certificates (or answers) done / signatures the raw loop would have made in the same windows
    = sum(n_i) / sum(seconds_i * (raw_i + raw_i+1) / 2)

so a slow second weighs on both sides of the ratio alike.
"""
from __future__ import annotations

import statistics
from typing import Callable


def interleaved(run_slice: Callable[[int], dict], probe: Callable[[], float],
                slices: int) -> dict:
    """run_slice(i) -> {"n": done, "seconds": wall, ...}; probe() -> raw signatures/s.

    Returns rate (n / seconds over all slices), ratio (above), the raw rates (refs), each
    slice's own ratio, and the slices' results (parts)."""
    if slices < 1:
        raise ValueError("at least one slice")
    refs = [probe()]
    parts = []
    for i in range(slices):
        parts.append(run_slice(i))
        refs.append(probe())
    windows = [p["seconds"] * (refs[i] + refs[i + 1]) / 2 for i, p in enumerate(parts)]
    n = sum(p["n"] for p in parts)
    seconds = sum(p["seconds"] for p in parts)
    return {"rate": n / seconds if seconds else 0.0,
            "ratio": n / sum(windows) if sum(windows) else 0.0,
            "raw_mean": statistics.mean(refs), "refs": refs,
            "slice_ratios": [p["n"] / w if w else 0.0 for p, w in zip(parts, windows)],
            "parts": parts}
