"""Process-wide Prometheus metrics registry: any layer adds counters/histograms here, /metrics
serves them (prometheus_client; multi-process aware under gunicorn via PROMETHEUS_MULTIPROC_DIR).

    from ca import metrics
    OCSP = metrics.counter("govca_ocsp_responses_total", "OCSP responses", ("status",))
    OCSP.labels(status="good").inc()
    LAT = metrics.histogram("govca_ocsp_seconds", "OCSP response time")
    with LAT.time(): ...
"""
from __future__ import annotations

import os
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

REGISTRY = CollectorRegistry(auto_describe=True)
_lock = threading.Lock()
_metrics: dict[str, object] = {}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _get_or_create(kind, name: str, doc: str, labels, **kwargs):
    with _lock:
        existing = _metrics.get(name)
        if existing is not None:
            if not isinstance(existing, kind):
                raise ValueError(f"metric {name} already exists as {type(existing).__name__}")
            return existing
        metric = kind(name, doc, tuple(labels), registry=REGISTRY, **kwargs)
        _metrics[name] = metric
        return metric


def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    """A counter (created once per process; the same object on later calls)."""
    return _get_or_create(Counter, name, doc, labels)


def histogram(name: str, doc: str, labels: tuple[str, ...] = (),
              buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
    return _get_or_create(Histogram, name, doc, labels, buckets=buckets)


def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    kwargs = {"multiprocess_mode": "livesum"} if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else {}
    return _get_or_create(Gauge, name, doc, labels, **kwargs)


def exposition_registry() -> CollectorRegistry:
    """What /metrics serves for in-process metrics: this process's registry, or under gunicorn
    with PROMETHEUS_MULTIPROC_DIR set, the sum over every worker."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY
