"""`govca serve`'s default worker count (ra_portal/cli/core.py serve_workers)."""
from __future__ import annotations

import pytest

from ra_portal.cli.core import serve_workers


@pytest.mark.parametrize("cpus, web, relying", [(1, 2, 2), (2, 4, 2), (4, 8, 4), (16, 32, 16)])
def test_two_single_threaded_workers_per_cpu(cpus, web, relying):
    assert serve_workers(cpus) == web
    assert serve_workers(cpus, relying_parties=True) == relying


def test_default_follows_the_machine(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    assert serve_workers() == 6
    monkeypatch.setattr("os.cpu_count", lambda: None)  # unknown: as one CPU
    assert serve_workers() == 2
