"""OpenAPI description of the batch endpoints (issue 8): POST /requests/batch and
POST /requests/approve-batch."""
from __future__ import annotations

from ra_portal.api.openapi import I, S, body, obj, ok, op, ref

MAX = 500  # ca.ra.approval.BATCH_MAX
ERROR = obj({"code": S, "message": S, "field": S}, ["code", "message"])
FAILED = obj({"index": I, "ok": {"const": False}, "id": I,
              "status": {"type": "integer", "description": "the HTTP status the single call "
                         "would have answered (404: missing or outside the caller's scope)"},
              "error": ERROR, "request": ref("Request")}, ["index", "ok", "status", "error"])

SCHEMAS = {
    "BatchCreated": obj({
        "results": {"type": "array", "items": {"oneOf": [
            obj({"index": I, "ok": {"const": True}, "request": ref("Request")},
                ["index", "ok", "request"]), FAILED]}},
        "created": I, "failed": I}, ["results", "created", "failed"]),
    "BatchApproved": obj({
        "results": {"type": "array", "items": {"oneOf": [
            obj({"index": I, "ok": {"const": True}, "id": I, "request": ref("Request"),
                 "certificate": obj({"serial": S, "pem": S, "not_after": S},
                                    ["serial", "pem"])},
                ["index", "ok", "id", "request"]), FAILED]}},
        "issued": I, "failed": I}, ["results", "issued", "failed"]),
}

PATHS = {
    "/requests/batch": {"post": op(
        f"Create (and by default submit) up to {MAX} requests in one call. Each item is the "
        "body of POST /requests and is validated and created on its own: a bad item is "
        "reported in its result and changes nothing; the good ones are committed together. "
        "`submit` applies to the items that do not say it themselves.",
        ok(ref("BatchCreated"), "200", "One result per item, in order", 403, 415),
        request_body=body(obj({
            "requests": {"type": "array", "minItems": 1, "maxItems": MAX,
                         "items": {"type": "object", "description": "the body of POST "
                                   "/requests (schema NewRequest), checked item by item: "
                                   "an item's bad field is reported in its result"}},
            "submit": {"type": ["boolean", "null"], "default": True}},
            ["requests"], extra=False)))},
    "/requests/approve-batch": {"post": op(
        f"Approve up to {MAX} requests in one call (two-person rule, state, central approval "
        "and scope exactly as POST /requests/{id}/approve; an id outside the caller's "
        "delegation is reported as not found like a missing one). The certificates of the "
        "issue, renew and change requests that become approved are made together; revoke "
        "requests are carried out one by one; restore requests are refused (not_batchable: "
        "approve them alone after the identity check).",
        ok(ref("BatchApproved"), "200", "One result per id, in order", 403, 415),
        request_body=body(obj({
            "ids": {"type": "array", "minItems": 1, "maxItems": MAX, "uniqueItems": True,
                    "items": {"type": "integer", "minimum": 1, "maximum": 2147483647}}},
            ["ids"], extra=False)))},
}
