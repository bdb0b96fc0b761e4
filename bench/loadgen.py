"""A closed-loop HTTP/1.1 load generator bounded by time, cheap enough to share 2 CPUs with the
server it measures.

One process drives every connection with non-blocking sockets and epoll (selectors): requests are
pre-encoded bytes, responses are framed by Content-Length only (what GovCA's OCSP front always
sends). Each connection has at most one request in flight (closed loop, keep-alive, no
pipelining), so `concurrency` is the number of requests outstanding at any time. On this VM a
request costs the generator ≈ 15-25 µs of CPU, against ≈ 100 µs for http.client in one process
per client (the previous generator), which took a third of the machine away from the server.

`procs` > 1 splits the connections over several processes (for machines with more cores).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import selectors
import socket
import time

_CRLF2 = b"\r\n\r\n"


def _encode(method: str, host: str, port: int, path: str, body: bytes | None,
            headers: dict) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class _Conn:
    __slots__ = ("sock", "buf", "t0", "need", "head_len", "status", "close", "i")

    def __init__(self, sock: socket.socket, i: int) -> None:
        self.sock, self.buf, self.t0, self.need, self.i = sock, b"", 0.0, -1, i
        self.head_len, self.status, self.close = 0, 0, False


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, server closes) from the response head."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    return status, length, close


def _worker(host: str, port: int, requests: list[bytes], nonce_at: int | None,
            n_conns: int, seconds: float, start_at: float, offset: int, out) -> None:
    sel = selectors.DefaultSelector()
    lat: list[float] = []
    errors = 0
    n = 0
    perf = time.perf_counter
    nreq = len(requests)
    urandom = os.urandom

    def connect(i: int) -> _Conn:
        s = socket.create_connection((host, port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        c = _Conn(s, i)
        sel.register(s, selectors.EVENT_READ, c)
        return c

    def send(c: _Conn) -> None:
        req = requests[c.i % nreq]
        c.i += n_conns
        if nonce_at is not None:  # a fresh nonce: every answer is signed
            req = req[:nonce_at] + urandom(32) + req[nonce_at + 32:]
        c.buf, c.need = b"", -1
        c.t0 = perf()
        c.sock.sendall(req)  # a few hundred bytes: fits the socket buffer at once

    # Start together (the parent forks every process first).
    while perf() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - perf())))
    end = perf() + seconds
    cpu0 = time.process_time()
    if n_conns == 1:  # one connection: a blocking loop, no selector (≈ 10 µs less a request)
        n, errors, lat = _single(host, port, requests, nonce_at, seconds, offset, end)
        out.put((n, errors, lat, time.process_time() - cpu0))
        return
    conns = [connect(offset + k) for k in range(n_conns)]
    for c in conns:
        send(c)
    while True:
        now = perf()
        if now >= end:
            break
        for key, _ in sel.select(timeout=end - now):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:  # closed by the server
                sel.unregister(c.sock)
                c.sock.close()
                if c.need != -1 or c.buf:
                    errors += 1
                    lat.append(perf() - c.t0)
                    n += 1
                c2 = connect(c.i)
                send(c2)
                continue
            c.buf += data
            if c.need == -1:
                k = c.buf.find(_CRLF2)
                if k < 0:
                    continue
                c.head_len = k + 4
                c.status, length, c.close = _parse_head(c.buf[:k])
                c.need = c.head_len + length
            if len(c.buf) < c.need:
                continue
            t1 = perf()
            lat.append(t1 - c.t0)
            n += 1
            if c.status != 200 or c.need == c.head_len:
                errors += 1
            if c.close:
                sel.unregister(c.sock)
                c.sock.close()
                if t1 < end:
                    send(connect(c.i))
            elif t1 < end:
                send(c)
    cpu = time.process_time() - cpu0
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    out.put((n, errors, lat, cpu))


def _single(host: str, port: int, requests: list[bytes], nonce_at: int | None,
            seconds: float, i: int, end: float) -> tuple[int, int, list[float]]:
    """_worker() for one connection: blocking send and recv, same framing and accounting."""
    perf = time.perf_counter
    urandom = os.urandom
    nreq = len(requests)
    lat: list[float] = []
    n = errors = 0

    def connect() -> socket.socket:
        s = socket.create_connection((host, port), timeout=max(10.0, seconds + 5))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s
    sock = connect()
    try:
        while True:
            t0 = perf()
            if t0 >= end:
                break
            req = requests[i % nreq]
            i += 1
            if nonce_at is not None:
                req = req[:nonce_at] + urandom(32) + req[nonce_at + 32:]
            sock.sendall(req)
            buf, need, status, close = b"", -1, 0, False
            while need < 0 or len(buf) < need:
                data = sock.recv(65536)
                if not data:
                    break
                buf += data
                if need < 0:
                    k = buf.find(_CRLF2)
                    if k >= 0:
                        status, length, close = _parse_head(buf[:k])
                        need = k + 4 + length
            lat.append(perf() - t0)
            n += 1
            if need < 0 or len(buf) < need or status != 200 or need == buf.find(_CRLF2) + 4:
                errors += 1
            if close or need < 0 or len(buf) < need:
                sock.close()
                sock = connect()
    finally:
        sock.close()
    return n, errors, lat


def run(host: str, port: int, *, method: str, paths: list[str], bodies: list[bytes] | None,
        headers: dict, concurrency: int, seconds: float, nonce_at: int | None = None,
        procs: int = 1) -> dict:
    """Requests/s, p50 and p99 latency (ms) and errors over `seconds` with `concurrency`
    closed-loop connections (keep-alive, one request in flight each). `nonce_at`: the offset of
    a 32-octet nonce inside each body, replaced by fresh random octets for every request."""
    if bodies:
        requests = [_encode(method, host, port, paths[k % len(paths)], b, headers)
                    for k, b in enumerate(bodies)]
        if nonce_at is not None:
            nonce_at += len(requests[0]) - len(bodies[0])
            if any(len(r) - len(b) != len(requests[0]) - len(bodies[0])
                   for r, b in zip(requests, bodies)):
                raise ValueError("with nonce_at, every request needs the same head length")
    else:
        requests = [_encode(method, host, port, p, None, headers) for p in paths]
        nonce_at = None
    procs = max(1, min(procs, concurrency))
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start_at = time.perf_counter() + 0.2
    share = [concurrency // procs + (1 if k < concurrency % procs else 0) for k in range(procs)]
    workers, offset = [], 0
    for k in range(procs):
        workers.append(ctx.Process(target=_worker, args=(host, port, requests, nonce_at,
                                                         share[k], seconds, start_at, offset, q)))
        offset += share[k]
    t0 = time.perf_counter()
    for p in workers:
        p.start()
    results = [q.get(timeout=seconds + 60) for _ in workers]
    for p in workers:
        p.join(timeout=10)
    wall = time.perf_counter() - t0
    lat = sorted(x for r in results for x in r[2])
    n = sum(r[0] for r in results)
    return {"requests": n, "errors": sum(r[1] for r in results),
            "rps": n / seconds if seconds else 0.0, "wall_s": wall,
            # the generator's own CPU per request while it ran (not its start and exit)
            "client_cpu_us": 1e6 * sum(r[3] for r in results) / max(1, n),
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None}
