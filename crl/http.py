"""Relying-party HTTP endpoints (no login): CA certificates, CRLs and OCSP."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import re
import sys
import threading
import time

from flask import Blueprint, Response, abort, current_app, request
from sqlalchemy import select

from ca import metrics
from ca.store.models import CertificateAuthority
from crl import ocsp_codec
from crl.ocsp import MALFORMED, OcspResult, OcspService, ocsp_settings
from crl.publish import CrlPublisher, delta_period

bp = Blueprint("pki", __name__)
OCSP_REQUESTS = metrics.counter("govca_ocsp_requests_total", "OCSP requests", ("method",))
OCSP_SECONDS = metrics.histogram("govca_ocsp_response_seconds", "OCSP response time")

_CA_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
MAX_OCSP_BODY = 16 * 1024
MAX_OCSP_GET_PATH = 4096  # a request with 16 certIDs and a nonce is well under 2 KiB of base64
CRL_CACHE_TTL = 5.0
_crl_cache: dict[tuple[int, str, str], tuple[object, float]] = {}
_crl_lock = threading.Lock()


def services():
    """The app's service container (set by the composition root)."""
    return current_app.extensions["govca"]


class _LazyKeys:
    """The key store, asked for only when a response must be signed."""

    def __init__(self, svc) -> None:
        self._svc = svc

    def load(self, key_id: bytes, label: str = ""):
        return self._svc.keys.load(key_id, label)


@bp.get("/pki/certs/<string:filename>")
def ca_certificate(filename: str):
    if not filename.endswith(".crt") or not _CA_NAME.match(filename[:-4]):
        abort(404)
    with services().db.transaction() as s:
        der = s.execute(select(CertificateAuthority.certificate_der).where(
            CertificateAuthority.name == filename[:-4])).scalar_one_or_none()
    if der is None:
        abort(404)
    return Response(der, mimetype="application/pkix-cert",
                    headers={"Cache-Control": "public, max-age=86400"})


# --- CRLs ----------------------------------------------------------------------------------
def _http_date(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.timezone.utc)


def _current_crl(name: str, kind: str):
    svc = services()
    key = (id(svc), name, kind)
    hit = _crl_cache.get(key)
    if hit is not None and time.monotonic() - hit[1] < CRL_CACHE_TTL:
        return hit[0]
    info = CrlPublisher(svc.db, None, svc.clock, svc.settings.base_url).current(name, kind)
    period = None
    if info is not None:
        with svc.db.transaction() as s:
            ca = s.execute(select(CertificateAuthority).where(
                CertificateAuthority.name == name)).scalar_one()
            period = ca.crl_interval_seconds if kind == "full" else delta_period(ca)
    value = (info, period)
    with _crl_lock:
        _crl_cache[key] = (value, time.monotonic())
    return value


@bp.get("/pki/crl/<string:filename>")
def crl_file(filename: str):
    """GET and HEAD (Flask answers HEAD from GET without the body)."""
    if not filename.endswith(".crl"):
        abort(404)
    stem = filename[:-4]
    kind = "delta" if stem.endswith("-delta") else "full"
    name = stem[:-6] if kind == "delta" else stem
    if not _CA_NAME.match(name):
        abort(404)
    info, period = _current_crl(name, kind)
    if info is None:
        abort(404)
    now = services().clock.now()
    # Cache no later than nextUpdate, nor past the time the next CRL is due (RFC 5280 5.1.2.5).
    max_age = int(min((info.next_update - now).total_seconds(),
                      (info.this_update + dt.timedelta(seconds=period) - now).total_seconds()))
    resp = Response(info.der, mimetype="application/pkix-crl")
    resp.headers["Cache-Control"] = f"public, max-age={max(0, max_age)}, no-transform"
    resp.last_modified = _http_date(info.this_update)
    resp.expires = _http_date(info.next_update)
    resp.set_etag(info.sha256[:32])
    return resp.make_conditional(request)


# --- OCSP ----------------------------------------------------------------------------------
# OCSP is the hot path of the relying parties: it is answered by a small WSGI layer in front of
# Flask (no request context, session, routing or hooks), installed when the blueprint is
# registered. It serves the same app's services.
def _ocsp_for(app) -> OcspService:
    """One responder per process and app, so its in-process cache serves every request."""
    svc = app.extensions.get("govca.ocsp")
    if svc is None:
        with _crl_lock:
            svc = app.extensions.get("govca.ocsp")
            if svc is None:
                s = app.extensions["govca"]
                svc = OcspService(s.db, _LazyKeys(s), s.clock, ocsp_settings(s))
                app.extensions["govca.ocsp"] = svc
    return svc


def ocsp_service() -> OcspService:
    return _ocsp_for(current_app._get_current_object())


def _etag_matches(header: str, etag: str) -> bool:
    for part in header.split(","):
        part = part.strip()
        if part.startswith("W/"):
            part = part[2:]
        if part == "*" or part.strip('"') == etag:
            return True
    return False


def _ocsp_headers(app, result: OcspResult) -> list[tuple[str, str]]:
    if result.status == ocsp_codec.SUCCESSFUL and result.cacheable:
        # RFC 5019 6.2: caching headers derived from the response's own times (formatted once
        # per answer: OcspResult.http_dates, .etag).
        now = app.extensions["govca"].clock.now()
        max_age = max(0, int((result.next_update - now).total_seconds()))
        last_modified, expires = result.http_dates
        return [("Content-Type", "application/ocsp-response"),
                ("Cache-Control", f"max-age={max_age}, public, no-transform, must-revalidate"),
                ("Last-Modified", last_modified), ("Expires", expires),
                ("ETag", f'"{result.etag}"')]
    return [("Content-Type", "application/ocsp-response"), ("Cache-Control", "no-store")]


def _plain(status: str, text: str, extra=()) -> tuple[str, list, bytes]:
    body = (text + "\n").encode()
    return status, [("Content-Type", "text/plain; charset=utf-8"), *extra], body


def handle_ocsp(app, environ) -> tuple[str, list[tuple[str, str]], bytes]:
    """RFC 6960 A.1: POST {url} with an application/ocsp-request body, or GET {url}/{url-encoded
    base64 of the DER request}. Bad input gets an OCSP error status or a 4xx, never a 500."""
    method = environ.get("REQUEST_METHOD", "GET")
    if method == "POST":
        ctype = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if ctype and ctype != "application/ocsp-request":
            return _plain("415 Unsupported Media Type",
                          "Content-Type must be application/ocsp-request")
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if length > MAX_OCSP_BODY:
            return "200 OK", _ocsp_headers(app, MALFORMED), MALFORMED.der
        body = environ["wsgi.input"].read(MAX_OCSP_BODY + 1 if length < 0 else length)
        if not body or len(body) > MAX_OCSP_BODY:
            return "200 OK", _ocsp_headers(app, MALFORMED), MALFORMED.der
        result = _ocsp_for(app).answer(body)
        return "200 OK", _ocsp_headers(app, result), result.der
    if method not in ("GET", "HEAD"):
        return _plain("405 Method Not Allowed", "use GET or POST", [("Allow", "GET, HEAD, POST")])
    tail = environ.get("PATH_INFO", "")[len("/ocsp"):].lstrip("/")
    if len(tail) > MAX_OCSP_GET_PATH:
        return _plain("414 URI Too Long", "request too long")
    try:
        text = tail.strip().replace(" ", "+")
        if not text:
            raise ValueError("empty")
        der = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "200 OK", _ocsp_headers(app, MALFORMED), MALFORMED.der
    result = _ocsp_for(app).answer(der)
    headers = _ocsp_headers(app, result)
    inm = environ.get("HTTP_IF_NONE_MATCH")
    if inm and result.cacheable and result.status == ocsp_codec.SUCCESSFUL and \
            _etag_matches(inm, result.etag):
        return "304 Not Modified", [h for h in headers if h[0] != "Content-Type"], b""
    return "200 OK", headers, result.der


class OcspFastPath:
    """WSGI middleware: /ocsp and /ocsp/... are answered here, everything else goes to Flask."""

    def __init__(self, app, inner) -> None:
        self.app, self.inner = app, inner
        self._counters: dict[str, object] = {}

    def _count(self, method: str) -> None:
        child = self._counters.get(method)
        if child is None:
            child = OCSP_REQUESTS.labels(method=method[:8])
            if len(self._counters) < 16:  # GET, POST, HEAD and a few odd ones
                self._counters[method] = child
        child.inc()

    def respond(self, environ) -> tuple[str, list[tuple[str, str]], bytes]:
        """(status, headers with Content-Length, body) for an OCSP request; also used by the
        gunicorn worker's keep-alive fast path (crl/gunicorn_worker.py)."""
        self._count(environ.get("REQUEST_METHOD", ""))
        t0 = time.perf_counter()
        try:
            try:
                status, headers, body = handle_ocsp(self.app, environ)
            finally:
                OCSP_SECONDS.observe(time.perf_counter() - t0)
        except Exception:  # pragma: no cover - answer() already maps failures to statuses
            self.app.logger.exception("OCSP front failed")
            status, headers, body = ("200 OK", [("Content-Type", "application/ocsp-response"),
                                                ("Cache-Control", "no-store")],
                                     ocsp_codec.INTERNAL_ERROR_RESPONSE)
        headers.append(("Content-Length", str(len(body))))
        return status, headers, body

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path != "/ocsp" and not path.startswith("/ocsp/"):
            return self.inner(environ, start_response)
        status, headers, body = self.respond(environ)
        start_response(status, headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]


@bp.record_once
def _install_ocsp_front(state) -> None:
    state.app.wsgi_app = OcspFastPath(state.app, state.app.wsgi_app)


# --- scheduler hook ------------------------------------------------------------------------
def start_scheduler_if_enabled(app) -> None:
    """GOVCA_SCHEDULER=inprocess: every web worker runs the scheduler; the lease picks one
    leader. Only in a serving process (gunicorn or the Flask development server), so that a
    `govca` command run with the variable exported does not start one."""
    if os.environ.get("GOVCA_SCHEDULER", "").lower() != "inprocess" or app.testing:
        return
    if "gunicorn" not in sys.modules and "werkzeug.serving" not in sys.modules:
        return
    from crl.scheduler import Lease, Scheduler, build_jobs, interval_from_env
    svc = app.extensions["govca"]
    sched = Scheduler(build_jobs(svc), Lease(svc.db, svc.clock), interval=interval_from_env())
    sched.start_background()
    app.extensions["govca.scheduler"] = sched
