"""A gunicorn worker class for the OCSP hot path: `gunicorn -k crl.gunicorn_worker.OcspWorker`.

It is gunicorn's `gthread` worker (same process model, thread pool, keep-alive poller, graceful
stop, max_requests, timeouts) with one addition for kept-alive connections:

* **fast path** -- when a kept-alive connection becomes readable and the bytes received form one
  complete, plain OCSP request (`GET /ocsp/...` or `POST /ocsp` with a Content-Length body,
  HTTP/1.1, nothing unusual in its head), it is answered directly by the app's OCSP front
  (`crl.http.OcspFastPath.respond`, the same code Flask's WSGI stack would reach). Anything else
  -- other paths, HEAD, HTTP/1.0, chunked bodies, Expect, a partial or pipelined read, a duplicate
  or odd header -- is handed back to gunicorn's own parser untouched (`unreader.unread`), so
  gunicorn's validation and error answers apply to it exactly as with `gthread`.
* **linger** -- after a fast answer the thread keeps waiting on the same connection for the next
  request (up to `LINGER` seconds) instead of returning it to the main thread's poller, as long
  as the worker has fewer connections than threads (so a new connection always finds a free
  thread). A busy keep-alive client then costs one wake-up per request instead of a poller
  round trip, a thread-pool hand-off and a pipe wake-up of the main thread. The wait is a
  blocking recv() with SO_RCVTIMEO (one system call per request, no poll()); the timeout is
  cleared before the connection goes back to gunicorn.
* **head cache** -- a client's request heads repeat (same URL and headers for every POST): each
  distinct head is parsed once per process (`parse_fast`), its verdict kept.

Per OCSP request this removes ≈ 60 % of the server's CPU time on the benchmark VM (docs/
performance.md). The first request of each connection, and every request that is not a plain
OCSP one, takes gunicorn's normal path. With an access log configured (`--access-logfile`), the
fast path is off, so that every request is logged as before.
"""
from __future__ import annotations

import io
import re
import socket
import struct
import time
from email.utils import formatdate
from urllib.parse import unquote_to_bytes

from gunicorn.workers.gthread import ThreadWorker

LINGER = 2.0  # seconds a thread waits on its kept-alive connection for the next request
MAX_HEAD = 8190
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNUSUAL = ("transfer-encoding", "expect", "upgrade", "http2-settings", "trailer", "te")


# The head of a client's requests is the same from one request to the next (a relying party
# POSTs to the same URL with the same headers; a GET's head names the certificate): each distinct
# head is parsed once per process and kept, with what the body must look like. Parsing is a pure
# function of the head's octets, so a kept verdict -- fast path or not -- holds for every request
# that repeats them. Bounded: forgotten all at once when full.
HEAD_CACHE_SIZE = 512
_heads: dict[bytes, tuple | bool] = {}


def parse_fast(data: bytes):
    """(environ, close) for one complete plain OCSP request in `data`, else None (gunicorn's
    parser takes it). Deliberately narrow: everything it does not recognise goes to gunicorn."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > MAX_HEAD:
        return None
    head = data[:end]
    parsed = _heads.get(head)
    if parsed is None:
        parsed = _parse_head(head) or False
        if len(_heads) >= HEAD_CACHE_SIZE:
            _heads.clear()
        _heads[head] = parsed
    if parsed is False:
        return None
    template, close, length = parsed
    body = data[end + 4:]
    if length != len(body):
        return None  # a partial body, or a pipelined request: gunicorn reads it
    environ = template.copy()
    environ["wsgi.input"] = io.BytesIO(body)
    return environ, close


def _parse_head(raw: bytes):
    """(environ without wsgi.input, close, body length) for the head of a plain OCSP request,
    else None."""
    try:
        head = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1" or parts[0] not in ("GET", "POST"):
        return None
    method, target = parts[0], parts[1]
    if not (target == "/ocsp" or target.startswith("/ocsp/")) or "?" in target or \
            "#" in target:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or "\r" in line or "\n" in line or "\x00" in line or \
                not _TOKEN.fullmatch(name):
            return None  # obs-fold, a space before the colon, a bare CR/LF, ...
        key = name.lower()
        if key in headers or key in _UNUSUAL:
            return None
        headers[key] = value.strip(" \t")
    length = headers.get("content-length")
    if method == "GET":
        if length not in (None, "0"):
            return None
        body_length = 0
    elif length is None or not length.isdigit() or len(length) > 7:
        return None  # no length: gunicorn reads it
    else:
        body_length = int(length)
    connection = headers.get("connection", "").lower()
    if connection not in ("", "keep-alive", "close"):
        return None
    environ = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": unquote_to_bytes(target).decode("latin-1"), "QUERY_STRING": "",
        "RAW_URI": target, "CONTENT_TYPE": headers.get("content-type", ""),
        "CONTENT_LENGTH": length or "", "wsgi.url_scheme": "http",
    }
    for key in ("if-none-match", "host", "user-agent"):
        if key in headers:
            environ["HTTP_" + key.upper().replace("-", "_")] = headers[key]
    return environ, connection == "close", body_length


def _set_linger(sock, seconds: float) -> bool:
    """SO_RCVTIMEO on a blocking socket (0: wait forever again, as gunicorn expects); True
    when set."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                        struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000)))
        return True
    except OSError:
        return False


class OcspWorker(ThreadWorker):
    """gthread plus the OCSP keep-alive fast path (see the module docstring)."""

    _front = False  # resolved on first use: the app's OcspFastPath, or None
    _date = (0, "")

    def _ocsp_front(self):
        if self._front is False:
            from crl.http import OcspFastPath
            front = getattr(self.wsgi, "wsgi_app", None)
            self._front = front if isinstance(front, OcspFastPath) else None
        return self._front

    def _http_date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]

    def handle(self, conn):
        if not conn.initialized or conn.is_http2 or self.cfg.is_ssl or self.cfg.accesslog \
                or self._ocsp_front() is None or conn.parser.unreader.buf.getvalue():
            return super().handle(conn)
        sock = conn.sock
        lingering = False  # SO_RCVTIMEO set: a recv() gives up after the linger time
        # Read once per call, not per request (gunicorn's Config.__getattr__ is a lookup and a
        # method call); they only change when the worker is replaced.
        threads, keepalive = self.cfg.threads, self.cfg.keepalive
        try:
            sock.setblocking(True)
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    return True  # idle for the linger time: back to the main thread's poller
                if not data:
                    return False  # the client closed
                parsed = parse_fast(data)
                if parsed is None:
                    if lingering:
                        lingering = not _set_linger(sock, 0)
                    conn.parser.unreader.unread(data)
                    return super().handle(conn)
                if not self._answer(sock, *parsed, keepalive):
                    return False
                # Linger on this connection while every connection can have its own thread:
                # the next recv() waits in the kernel (SO_RCVTIMEO), one system call a request.
                if not self.alive or self.nr_conns >= threads:
                    return True
                if not lingering:
                    lingering = _set_linger(sock, min(LINGER, keepalive))
        except OSError:
            return False
        except Exception:  # pragma: no cover - respond() maps app failures to OCSP statuses
            self.log.exception("OCSP fast path failed")
            return False
        finally:
            if lingering:
                _set_linger(sock, 0)

    def _answer(self, sock, environ, close: bool, keepalive=None) -> bool:
        """Answer one request; False when the connection is to be closed."""
        self.nr += 1
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
        if keepalive is None:
            keepalive = self.cfg.keepalive
        if not self.alive or not keepalive:
            close = True
        status, headers, body = self._front.respond(environ)
        head = [f"HTTP/1.1 {status}\r\nDate: {self._http_date()}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in headers]
        head.append("\r\n")
        sock.sendall("".join(head).encode("latin-1") + body)
        return not close
