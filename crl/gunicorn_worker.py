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
  round trip, a thread-pool hand-off and a pipe wake-up of the main thread.

Per OCSP request this removes ≈ 60 % of the server's CPU time on the benchmark VM (docs/
performance.md). The first request of each connection, and every request that is not a plain
OCSP one, takes gunicorn's normal path. With an access log configured (`--access-logfile`), the
fast path is off, so that every request is logged as before.
"""
from __future__ import annotations

import io
import re
import select
import time
from email.utils import formatdate
from urllib.parse import unquote_to_bytes

from gunicorn.workers.gthread import ThreadWorker

LINGER = 2.0  # seconds a thread waits on its kept-alive connection for the next request
MAX_HEAD = 8190
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNUSUAL = ("transfer-encoding", "expect", "upgrade", "http2-settings", "trailer", "te")


def parse_fast(data: bytes):
    """(environ, close) for one complete plain OCSP request in `data`, else None (gunicorn's
    parser takes it). Deliberately narrow: everything it does not recognise goes to gunicorn."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > MAX_HEAD:
        return None
    try:
        head = data[:end].decode("ascii")
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
    body = data[end + 4:]
    length = headers.get("content-length")
    if method == "GET":
        if body or length not in (None, "0"):
            return None
    elif length is None or not length.isdigit() or len(length) > 7 or int(length) != len(body):
        return None  # no length, a partial body, or a pipelined request: gunicorn reads it
    connection = headers.get("connection", "").lower()
    if connection not in ("", "keep-alive", "close"):
        return None
    environ = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": unquote_to_bytes(target).decode("latin-1"), "QUERY_STRING": "",
        "RAW_URI": target, "CONTENT_TYPE": headers.get("content-type", ""),
        "CONTENT_LENGTH": length or "", "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
    }
    for key in ("if-none-match", "host", "user-agent"):
        if key in headers:
            environ["HTTP_" + key.upper().replace("-", "_")] = headers[key]
    return environ, connection == "close"


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
        poller = None
        try:
            sock.setblocking(True)
            while True:
                data = sock.recv(65536)
                if not data:
                    return False  # the client closed
                parsed = parse_fast(data)
                if parsed is None:
                    conn.parser.unreader.unread(data)
                    return super().handle(conn)
                if not self._answer(sock, *parsed):
                    return False
                # Linger on this connection while every connection can have its own thread.
                if not self.alive or self.nr_conns >= self.cfg.threads:
                    return True
                if poller is None:
                    poller = select.poll()
                    poller.register(sock, select.POLLIN)
                if not poller.poll(1000 * min(LINGER, self.cfg.keepalive)):
                    return True  # idle: back to the main thread's poller
        except OSError:
            return False
        except Exception:  # pragma: no cover - respond() maps app failures to OCSP statuses
            self.log.exception("OCSP fast path failed")
            return False

    def _answer(self, sock, environ, close: bool) -> bool:
        """Answer one request; False when the connection is to be closed."""
        self.nr += 1
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
        if not self.alive or not self.cfg.keepalive:
            close = True
        status, headers, body = self._front.respond(environ)
        head = [f"HTTP/1.1 {status}\r\nDate: {self._http_date()}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in headers]
        head.append("\r\n")
        sock.sendall("".join(head).encode("latin-1") + body)
        return not close
