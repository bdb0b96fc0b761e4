"""The OpenAPI 3 document of /api/v1, written beside the routes it describes."""
from __future__ import annotations

from ra_portal.api import bp

S = {"type": "string"}
NS = {"type": ["string", "null"]}
I = {"type": "integer"}
NI = {"type": ["integer", "null"]}
DT = {"type": ["string", "null"], "format": "date-time"}
B = {"type": "boolean"}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict, required: list[str] | None = None, extra: bool = True) -> dict:
    d = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        d["required"] = required
    return d


def nullable_optionals(schema: dict) -> dict:
    """In request bodies an optional field may be null, meaning 'not given'."""
    for name, prop in schema["properties"].items():
        if name in schema.get("required", ()):
            continue
        prop["type"] = [prop["type"], "null"]
        if "enum" in prop:
            prop["enum"] = [*prop["enum"], None]
    return schema


def page_of(item: str) -> dict:
    return obj({"items": {"type": "array", "items": ref(item)}, "page": I, "per_page": I,
                "total": I}, ["items", "page", "per_page", "total"])


ERRORS = {str(c): {"$ref": f"#/components/responses/E{c}"} for c in (400, 401, 404)}
QS = lambda name, schema, desc="": {"name": name, "in": "query", "required": False,  # noqa: E731
                                    "schema": schema, "description": desc}
PAGING = [QS("page", {"type": "integer", "minimum": 1, "maximum": 1000000}),
          QS("per_page", {"type": "integer", "minimum": 1, "maximum": 200})]
ID = lambda name: {"name": name, "in": "path", "required": True,  # noqa: E731
                   "schema": {"type": "integer", "minimum": 0, "maximum": 2147483647}}
SERIAL = {"name": "serial", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[0-9a-f]{1,40}$"},
          "description": "lowercase hex, no separators"}


def body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def ok(schema: dict, status: str = "200", desc: str = "OK", *more: int) -> dict:
    r = {status: {"description": desc, "content": {"application/json": {"schema": schema}}}}
    r.update(ERRORS)
    for c in more:
        r[str(c)] = {"$ref": f"#/components/responses/E{c}"}
    return r


def op(summary: str, responses: dict, params=(), request_body=None) -> dict:
    d = {"summary": summary, "responses": responses, "security": [{"bearer": []}]}
    if params:
        d["parameters"] = list(params)
    if request_body:
        d["requestBody"] = request_body
    return d


SCHEMAS = {
    "Error": obj({"error": obj({"code": S, "message": S, "field": S}, ["code", "message"])},
                 ["error"]),
    "Organization": obj({"id": I, "name": S, "parent_id": NI, "domain": S, "kind": S,
                         "level": I, "active": B}, ["id", "name", "parent_id", "domain"]),
    "Subscriber": obj({"id": I, "kind": S, "full_name": S, "id_type": S, "id_number": S,
                       "email": NS, "mobile": NS, "position": NS, "device_type": S,
                       "date_of_birth": {"type": ["string", "null"], "format": "date"},
                       "organization_id": I, "domain": S, "username": NS,
                       "created_at": {"type": "string", "format": "date-time"}},
                      ["id", "full_name", "id_number", "email", "organization_id"]),
    "NewSubscriber": nullable_optionals(obj({
        "full_name": {"type": "string", "minLength": 1, "maxLength": 64},
        "id_number": {"type": "string", "pattern": "^([0-9]{9}|[0-9]{12}|[A-Z][0-9]{7,8})$",
                      "description": "CCCD 12 digits (province code, century/sex digit, year "
                                     "of birth), CMND 9 digits, passport letter+7-8 digits"},
        "id_type": {"type": "string", "enum": ["CCCD", "CMND", "PASSPORT"]},
        "email": {"type": "string", "format": "email", "maxLength": 254},
        "organization_id": {"type": "integer", "minimum": 1, "maximum": 2147483647},
        "date_of_birth": {"type": "string", "anyOf": [{"format": "date"}, {"maxLength": 0}],
                          "description": "YYYY-MM-DD; empty means not given"},
        "position": {"type": "string", "maxLength": 200},
        "mobile": {"type": "string", "pattern": "^((\\+84|0)[ .-]?[35789]([ .-]?[0-9]){8})?$",
                   "description": "empty means not given"},
        "device_type": {"type": "string", "enum": ["TOKEN", "SIM", "SOFT", "RSSP", "HSM"]},
        "kind": {"type": "string", "enum": ["person", "organization", "device"]},
    }, ["full_name", "id_number", "email", "organization_id"], extra=False)),
    "Request": obj({
        "id": I, "type": {"type": "string", "enum": ["issue", "renew", "change", "revoke",
                                                     "restore"]},
        "state": {"type": "string", "enum": ["draft", "submitted", "approved", "rejected",
                                             "issued", "done", "failed"]},
        "certificate_serial": NS, "subscriber_id": I, "profile": NS, "serial": NS,
        "reason": NS, "validity_days": NI, "central_approval_required": B, "created_by": S,
        "created_at": DT, "submitted_by": NS, "submitted_at": DT, "due_at": DT, "overdue": B,
        "approved_by": NS, "approved_at": DT, "central_approved_by": NS,
        "central_approved_at": DT, "rejected_by": NS, "decision_note": NS,
        "completed_at": DT, "failure_reason": NS,
        "unblock_code": {"type": "string", "description": "restore, approve response only: "
                         "the one-time unblock code, shown once"},  # issue 6
    }, ["id", "type", "state", "certificate_serial"]),
    "NewRequest": nullable_optionals(obj({
        "type": {"type": "string", "enum": ["issue", "renew", "change", "revoke", "restore"]},
        "subscriber_id": {"type": "integer", "minimum": 1},
        "profile": {"type": "string"}, "csr_pem": {"type": "string", "maxLength": 65536},
        "serial": {"type": "string", "maxLength": 64,
                   "description": "the certificate concerned (renew, change, revoke)"},
        "reason": {"type": "string", "description": "revoke: RFC 5280 reason in camelCase; "
                                                    "change: superseded or affiliationChanged"},
        "validity_days": {"type": "integer", "minimum": 1},
        "device_id": {"type": "integer", "minimum": 1,  # restore (issue 6)
                      "description": "restore: the key device (docs/tokens.md)"},
        "submit": {"type": "boolean", "default": True,
                   "description": "false keeps the request as a draft"},
    }, ["type", "subscriber_id"], extra=False)),
    "OrganizationVersion": obj({
        "version": I, "name": S, "parent_id": NI, "kind": S, "active": B,
        "merged_into_id": NI, "valid_from": DT, "valid_to": DT, "created_by": S,
        "reason": NS}, ["version", "name", "parent_id", "valid_from", "valid_to"]),
    "IssuedOrganization": {"type": ["object", "null"], "properties": {
        "id": I, "version": I, "name": S}, "required": ["id", "version", "name"],
        "description": "the subscriber's organisation as it was at issuance"},
    "Certificate": obj({
        "serial": S, "status": {"type": "string", "enum": ["valid", "revoked", "expired"]},
        "pem": S, "subscriber_id": NI, "ca": S, "profile": S, "subject": S,
        "not_before": DT, "not_after": DT, "revoked_at": DT, "revocation_reason": NS,
        "fingerprint_sha256": NS},
        ["serial", "status", "pem", "subscriber_id", "not_after", "revoked_at",
         "revocation_reason"]),
}

REVOKE_REASONS = ["keyCompromise", "cACompromise", "affiliationChanged", "superseded",
                  "cessationOfOperation", "privilegeWithdrawn"]

PATHS = {
    "/organizations": {"get": op("Organisations in the caller's scope",
                                 ok({"type": "array", "items": ref("Organization")}),
                                 [QS("q", {"type": "string", "maxLength": 100},
                                     "search, with or without diacritics")])},
    "/organizations/{organization_id}": {"get": op(
        "One organisation with its current version number",
        ok({"allOf": [ref("Organization"), obj({"version": I}, ["version"])]}),
        [ID("organization_id")])},
    "/organizations/{organization_id}/versions": {"get": op(
        "Every version of an organisation (renames, moves, mergers), oldest first",
        ok({"type": "array", "items": ref("OrganizationVersion")}), [ID("organization_id")])},
    "/organizations/{organization_id}/rename": {"post": op(
        "Rename an organisation: creates a new version (RA officer in scope or central "
        "operator); certificates issued before keep the old version",
        ok(ref("OrganizationVersion"), "200", "OK", 403, 415), [ID("organization_id")],
        body(obj({"name": {"type": "string", "minLength": 1, "maxLength": 200},
                  "reason": {"type": "string", "minLength": 1, "maxLength": 500}},
                 ["name", "reason"], extra=False)))},
    "/subscribers": {
        "get": op("Subscribers in scope, paginated", ok(page_of("Subscriber")),
                  [QS("q", {"type": "string", "maxLength": 100},
                      "name (with or without diacritics), e-mail or ID number"),
                   QS("organization_id", {"type": "integer", "minimum": 1,
                                          "maximum": 2147483647}), *PAGING]),
        "post": op("Register a subscriber (Form 01)",
                   ok(ref("Subscriber"), "201", "Created", 403, 409, 415),
                   request_body=body(ref("NewSubscriber")))},
    "/subscribers/{subscriber_id}": {"get": op("One subscriber", ok(ref("Subscriber")),
                                               [ID("subscriber_id")])},
    "/subscribers/{subscriber_id}/transfer": {"post": op(
        "Move a subscriber to another organisation of the same domain; valid certificates get "
        "a change request",
        ok(obj({"subscriber": ref("Subscriber"), "previous_organization_id": I,
                "change_requests": {"type": "array", "items": ref("Request")},
                "certificates_needing_csr": {"type": "array", "items": S}},
               ["subscriber", "change_requests"]), "200", "OK", 403, 409, 415),
        [ID("subscriber_id")],
        body(obj({"organization_id": {"type": "integer", "minimum": 1}},
                 ["organization_id"], extra=False)))},
    "/requests": {
        "get": op("Requests in scope, newest first", ok(page_of("Request")),
                  [QS("state", {"type": "string", "enum": SCHEMAS["Request"]["properties"]
                                ["state"]["enum"]}),
                   QS("type", {"type": "string", "enum": SCHEMAS["Request"]["properties"]
                               ["type"]["enum"]}),
                   QS("subscriber_id", {"type": "integer", "minimum": 1,
                                        "maximum": 2147483647}),
                   QS("overdue", {"type": "boolean"}), QS("needs_central", {"type": "boolean"}),
                   *PAGING]),
        "post": op("Create (and by default submit) a request",
                   ok(ref("Request"), "201", "Created", 403, 409, 415, 422),
                   request_body=body(ref("NewRequest")))},
    "/requests/{request_id}": {"get": op("One request", ok(ref("Request")), [ID("request_id")])},
    "/requests/{request_id}/submit": {"post": op(
        "Submit a draft", ok(ref("Request"), "200", "OK", 403, 409), [ID("request_id")])},
    "/requests/{request_id}/approve": {"post": op(
        "Approve (two-person rule; central profiles also need a central operator). When every "
        "approval is in, the certificate is issued or revoked.",
        ok(ref("Request"), "200", "OK", 403, 409), [ID("request_id")])},
    "/requests/{request_id}/reject": {"post": op(
        "Reject a submitted request", ok(ref("Request"), "200", "OK", 403, 409),
        [ID("request_id")],
        {"required": False, "content": {"application/json": {"schema": obj(
            {"reason": {"type": "string", "maxLength": 1000}}, extra=False)}}})},
    "/certificates": {"get": op("Released certificates in scope", ok(page_of("Certificate")),
                                [QS("subscriber_id", {"type": "integer", "minimum": 1,
                                                      "maximum": 2147483647}),
                                 QS("status", {"type": "string",
                                               "enum": ["valid", "revoked", "expired"]}),
                                 *PAGING])},
    "/certificates/{serial}": {"get": op("One certificate", ok({"allOf": [ref("Certificate"), obj(
        {"organization": ref("IssuedOrganization")})]}), [SERIAL])},
    "/certificates/{serial}/revoke": {"post": op(
        "Ask for revocation: raises a revoke request (approved by another person)",
        ok(ref("Request"), "202", "Accepted: the revoke request", 403, 409, 415, 422), [SERIAL],
        body(obj({"reason": {"type": "string", "enum": REVOKE_REASONS}}, ["reason"],
                 extra=False)))},
}

RESPONSES = {f"E{c}": {"description": d, "content": {"application/json": {
    "schema": ref("Error")}}} for c, d in (
    (400, "Bad input (the field is named)"), (401, "Missing, unknown or revoked token"),
    (403, "Not allowed for this role, or two-person rule"),
    (404, "Not found (or outside the caller's scope)"),
    (409, "Conflicts with the current state"), (415, "Not JSON"),
    (422, "Refused by policy"))}



def _merge(module: str) -> None:
    """Add the PATHS and SCHEMAS that an area describes in its own module."""
    import importlib
    part = importlib.import_module(module)
    PATHS.update(part.PATHS)
    SCHEMAS.update(getattr(part, "SCHEMAS", {}))


# Areas describing their own endpoints (one line each):
# --- openapi parts ---
_merge("ra_portal.api.openapi_reorg")
_merge("ra_portal.api.openapi_transfers")
_merge("ra_portal.api.openapi_tokens")
_merge("ra_portal.api.openapi_batch")

# issue 8: any operation may be refused for an outage (HSM or database unavailable): 503 with
# Retry-After; nothing was stored for a refused request (docs/faults.md).
RESPONSES["E503"] = {
    "description": "Temporarily unavailable (hsm_unavailable, database_unavailable): retry "
                   "after the number of seconds in Retry-After; nothing was stored",
    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    "content": {"application/json": {"schema": ref("Error")}}}
for _item in PATHS.values():
    for _op in _item.values():
        if isinstance(_op, dict) and "responses" in _op:
            _op["responses"].setdefault("503", {"$ref": "#/components/responses/E503"})


DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "GovCA RA API", "version": "1.0.0",
             "description": "Registration authority API for document-management systems. "
                            "Every answer is limited to the token owner's delegation; an "
                            "object outside it answers 404 like a missing one."},
    "servers": [{"url": "/api/v1"}],
    "paths": PATHS,
    "components": {"schemas": SCHEMAS, "responses": RESPONSES,
                   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
}


@bp.get("/openapi.json")
def openapi():
    return DOCUMENT
