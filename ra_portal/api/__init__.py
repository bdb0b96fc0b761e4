"""The REST API /api/v1: bearer-token authentication and CAError -> JSON error at the edge."""
from __future__ import annotations

import logging

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ca.errors import (CAError, Conflict, HsmUnavailable, InvalidInput, LintFailed, NotFound,
                       PermissionDenied, PolicyViolation)
from ca.ra.authn import AuthenticationFailed, caller_for_token
from ca.ra.roles import Caller

log = logging.getLogger(__name__)
bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
PUBLIC_ENDPOINTS = {"api_v1.openapi"}

STATUS = [(AuthenticationFailed, 401), (NotFound, 404), (PermissionDenied, 403),
          (Conflict, 409), (LintFailed, 422), (PolicyViolation, 422), (InvalidInput, 400),
          (HsmUnavailable, 503)]


def error(status: int, code: str, message: str, field: str | None = None,
          retry_after: int | None = None):
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    if retry_after is not None:
        body["retry_after"] = retry_after
    resp = jsonify({"error": body})
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="govca"'
    if retry_after is not None:  # RFC 9110 10.2.3, with 503
        resp.headers["Retry-After"] = str(retry_after)
        resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.errorhandler(CAError)
def _ca_error(exc: CAError):
    status = next((st for cls, st in STATUS if isinstance(exc, cls)), 500)
    if status == 500:
        log.error("unexpected CA error %s: %s", exc.code, exc.message)
        return error(500, "internal_error", "the request could not be completed")
    if status == 503:
        from ra_portal.web.unavailable import retry_after
        return error(503, exc.code, exc.message, exc.field, retry_after=retry_after(exc))
    return error(status, exc.code, exc.message, exc.field)


def _database_down(exc: Exception):
    from ca.store.database import RETRY_AFTER
    log.warning("database unavailable during %s %s: %s", request.method, request.path,
                type(exc).__name__)
    return error(503, "database_unavailable", "the database cannot be reached now; retry "
                 "later (read the object back first if you need to know whether an earlier "
                 "attempt went through)", retry_after=RETRY_AFTER)


@bp.app_errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    """Under /api/ every HTTP error is JSON; elsewhere Flask's default page is kept."""
    if not request.path.startswith("/api/"):
        return exc
    codes = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
             405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}
    resp = error(exc.code or 500, codes.get(exc.code, "http_error"),
                 exc.description or exc.name)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            resp.headers[name] = value  # e.g. Allow on 405 (RFC 9110 15.5.6)
    return resp


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    from ca.store.database import is_transient
    if is_transient(exc):
        return _database_down(exc)
    log.exception("unexpected error in the API")
    return error(500, "internal_error", "the request could not be completed")


@bp.before_request
def _authenticate():
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return error(401, "unauthenticated", "send Authorization: Bearer <API token>")
    from ra_portal import services
    svc = services()
    caller = caller_for_token(svc.db, svc.clock, token.strip())
    if caller is None:
        return error(401, "unauthenticated", "the API token is unknown, revoked or expired")
    g.caller = caller
    unknown = sorted(set(request.args) - allowed_query(request.url_rule, request.method))
    if unknown:
        return error(400, "unknown_parameter", f"unknown query parameter {unknown[0][:40]!r}",
                     unknown[0][:40])
    return None


def allowed_query(rule, method: str) -> set[str]:
    """The query parameters the OpenAPI document declares for this route and method; any
    other is refused, so a misspelt filter never silently returns everything."""
    from ra_portal.api.openapi import DOCUMENT
    if rule is None:
        return set()
    path = rule.rule[len(bp.url_prefix):]
    for conv in ("int:", "string:"):
        path = path.replace("<" + conv, "<")
    path = path.replace("<", "{").replace(">", "}")
    op = DOCUMENT["paths"].get(path, {}).get(method.lower(), {})
    return {p["name"] for p in op.get("parameters", ()) if p["in"] == "query"}


def caller() -> Caller:
    return g.caller


def json_body() -> dict:
    """The request's JSON object, or a 400 naming what is wrong."""
    if not request.is_json:
        raise InvalidInput("send a JSON body with Content-Type: application/json",
                           code="invalid_body")
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # absurdly nested JSON
        data = None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", code="invalid_body")
    return data


def only_fields(body: dict, allowed: set[str]) -> dict:
    """The body, if it names no field outside `allowed`; else a 400 naming the first one."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", field=unknown[0],
                           code="unknown_field")
    return body


from ra_portal.api import v1_subscribers, v1_requests, openapi  # noqa: E402,F401
from ra_portal.api import v1_organizations  # noqa: E402,F401
from ra_portal.api import v1_tokens  # noqa: E402,F401
from ra_portal.api import v1_transfers  # noqa: E402,F401
from ra_portal.api import v1_reorg  # noqa: E402,F401
from ra_portal.api import v1_batch  # noqa: E402,F401
