"""A closed-loop HTTP/1.1 load generator (stdlib only, one process per client) bounded by time."""
from __future__ import annotations

import http.client
import multiprocessing as mp
import os
import statistics
import time


def _client(host, port, method, paths, bodies, headers, seconds, queue, nonce_at):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    lat, errors, n = [], 0, 0
    end = time.perf_counter() + seconds
    i = os.getpid()
    while time.perf_counter() < end:
        path = paths[i % len(paths)]
        body = bodies[i % len(bodies)] if bodies else None
        if body is not None and nonce_at is not None:
            body = body[:nonce_at] + os.urandom(32) + body[nonce_at + 32:]
        i += 1
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            if r.status != 200 or not data:
                errors += 1
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=10)
        lat.append(time.perf_counter() - t0)
        n += 1
    queue.put((n, errors, lat))


def run(host: str, port: int, *, method: str, paths: list[str], bodies: list[bytes] | None,
        headers: dict, concurrency: int, seconds: float, nonce_at: int | None = None) -> dict:
    """Requests/s, p50 and p99 latency (ms) and errors over `seconds` with `concurrency`
    closed-loop clients."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(host, port, method, paths, bodies, headers,
                                                seconds, q, nonce_at))
             for _ in range(concurrency)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    wall = time.perf_counter() - t0
    lat = sorted(x for _, _, ls in results for x in ls)
    n = sum(r[0] for r in results)
    return {"requests": n, "errors": sum(r[1] for r in results),
            "rps": n / seconds if seconds else 0.0, "wall_s": wall,
            "p50_ms": 1000 * statistics.median(lat) if lat else None,
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None}
