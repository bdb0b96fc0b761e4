"""`govca serve`'s default worker count (ra_portal/cli/core.py serve_workers) and the web
workers' signing threads (GOVCA_SIGN_THREADS)."""
from __future__ import annotations

import pytest

from ra_portal.cli.core import serve_workers


@pytest.mark.parametrize("cpus, workers", [(1, 2), (2, 2), (4, 4), (16, 16)])
def test_one_worker_per_cpu_web_or_relying_parties(cpus, workers):
    assert serve_workers(cpus) == workers


def test_default_follows_the_machine(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    assert serve_workers() == 3
    monkeypatch.setattr("os.cpu_count", lambda: None)  # unknown: as one CPU
    assert serve_workers() == 2


def test_sign_threads_setting():
    """GOVCA_SIGN_THREADS: threads a web worker signs a batch in (1 by default: the workers of
    govca serve share the CPUs); out-of-range or non-numbers are a configuration error."""
    import pytest

    from ca.errors import ConfigurationError
    from ra_portal.settings import Settings, sign_threads
    assert sign_threads({}) == 1
    assert sign_threads({"GOVCA_SIGN_THREADS": " 4 "}) == 4
    for bad in ("0", "17", "two", "1.5", "-1"):
        with pytest.raises(ConfigurationError, match="GOVCA_SIGN_THREADS"):
            sign_threads({"GOVCA_SIGN_THREADS": bad})
    settings = Settings.from_env({"GOVCA_INSTANCE": "/tmp/none", "GOVCA_SIGN_THREADS": "3"})
    assert settings.sign_threads == 3
