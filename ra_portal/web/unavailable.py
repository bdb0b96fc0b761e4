"""503 for outages: the HSM or the database cannot be reached now. Pages get a short Vietnamese
page, the relying-party paths plain text, and every 503 carries Retry-After (RFC 9110 10.2.3).
The API answers the same faults in JSON (ra_portal/api). docs/faults.md tells the whole story."""
from __future__ import annotations

import logging

from flask import Flask, Response, render_template_string, request
from flask_babel import gettext as _
from sqlalchemy import exc as sa_exc

from ca.errors import HsmUnavailable
from ca.store.database import RETRY_AFTER as DB_RETRY_AFTER
from ca.store.database import is_transient

log = logging.getLogger(__name__)
HSM_RETRY_AFTER = 3

# Self-contained on purpose: base.html asks for the logged-in user, which needs the database.
PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body><main><h1>{{ title }}</h1><p role="alert">{{ message }}</p>
<p>{{ retry }}</p></main></body></html>
"""


def retry_after(exc: Exception) -> int:
    if isinstance(exc, HsmUnavailable):
        return int(exc.params.get("retry_after", HSM_RETRY_AFTER))
    return DB_RETRY_AFTER


def _unavailable_page(what: str, seconds: int):
    if request.path.startswith(("/pki/", "/ocsp")):
        body = ("HSM unavailable" if what == "hsm" else "database unavailable") + \
               f"; retry in {seconds} s\n"
        resp = Response(body, status=503, mimetype="text/plain")
    else:
        title = _("Dịch vụ tạm thời gián đoạn")
        message = (_("Thiết bị HSM tạm thời không truy cập được, vui lòng thử lại sau.")
                   if what == "hsm" else
                   _("Cơ sở dữ liệu tạm thời không truy cập được, vui lòng thử lại sau."))
        retry = _("Không có thay đổi nào được lưu. Vui lòng thử lại sau %(n)d giây.", n=seconds)
        resp = Response(render_template_string(PAGE, title=title, message=message, retry=retry),
                        status=503, mimetype="text/html")
    resp.headers["Retry-After"] = str(seconds)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def init_app(app: Flask) -> None:
    @app.errorhandler(HsmUnavailable)
    def _hsm_down(exc: HsmUnavailable):
        log.warning("HSM unavailable: %s", exc.message)
        return _unavailable_page("hsm", retry_after(exc))

    @app.errorhandler(sa_exc.SQLAlchemyError)
    def _db_down(exc: sa_exc.SQLAlchemyError):
        if not is_transient(exc):
            raise exc  # a bug, not an outage: the ordinary 500
        log.warning("database unavailable: %s", type(exc).__name__)
        return _unavailable_page("db", retry_after(exc))

    @app.after_request
    def _retry_after(resp):
        # A page blueprint's own CAError handler answers HsmUnavailable with 503 too.
        if resp.status_code == 503 and "Retry-After" not in resp.headers:
            resp.headers["Retry-After"] = str(HSM_RETRY_AFTER)
        return resp
