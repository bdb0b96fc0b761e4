"""/api/v1/tokens/*: GovCA's side of the RA workstation (`govca token enrol/unblock --url`).

Thin: each route checks its JSON body against the schema of ra_portal.api.openapi_tokens and
calls the TokenGateway method of the same name, acting for the bearer-token's user (scope and
permissions are checked by the gateway, audited in its transactions). Error bodies also carry
`kind` (the CAError class) so the workstation re-raises the same exception. SO PINs travel only
in request/response bodies, never in URLs (access logs) or logs; answers are not cacheable."""
from __future__ import annotations

import re

from flask import jsonify

from ca.errors import CAError, ConfigurationError, IntegrityError, InvalidInput
from ra_portal import services
from ra_portal.api import STATUS, bp, caller, error, json_body
from ra_portal.api.openapi_tokens import OPERATIONS, SCHEMAS

KINDS = ("InvalidInput", "BadCSR", "PolicyViolation", "NotFound", "Conflict", "PermissionDenied",
         "LintFailed", "IntegrityError", "HsmUnavailable", "ConfigurationError")
_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list, "null": type(None)}


def _kind(exc: CAError) -> str:
    return next((c.__name__ for c in type(exc).__mro__ if c.__name__ in KINDS), "CAError")


def check_body(schema: dict, data: dict) -> dict:
    """The few JSON Schema keywords the token schemas use; the first fault is named."""
    unknown = sorted(set(data) - set(schema["properties"]))
    if unknown and schema.get("additionalProperties") is False:
        raise InvalidInput(f"unknown field {unknown[0][:40]!r}", field=unknown[0][:40],
                           code="unknown_field")
    for name in schema.get("required", ()):
        if name not in data:
            raise InvalidInput(f"{name} is required", field=name)
    for name, value in data.items():
        _check_value(schema["properties"][name], value, name)
    return data


def _check_value(prop: dict, value, name: str) -> None:
    types = prop.get("type")
    types = [types] if isinstance(types, str) else list(types or ())
    if types and not any(isinstance(value, _TYPES[t]) and not (t == "integer" and
                                                               isinstance(value, bool))
                         for t in types):
        raise InvalidInput(f"{name} must be {' or '.join(types)}", field=name)
    if value is None:
        return
    if "enum" in prop and value not in prop["enum"]:
        raise InvalidInput(f"{name} is one of {', '.join(map(str, prop['enum']))}", field=name)
    if isinstance(value, str):
        if not prop.get("minLength", 0) <= len(value) <= prop.get("maxLength", 10**6):
            raise InvalidInput(f"{name} is {prop.get('minLength', 0)} to "
                               f"{prop.get('maxLength')} characters", field=name)
        if "pattern" in prop and not re.search(prop["pattern"], value):
            raise InvalidInput(f"{name} has characters that are not allowed", field=name)
    if isinstance(value, int) and not isinstance(value, bool):
        if not prop.get("minimum", -2**63) <= value <= prop.get("maximum", 2**63):
            raise InvalidInput(f"{name} is out of range", field=name)
    if isinstance(value, list):
        if len(value) > prop.get("maxItems", 10**6):
            raise InvalidInput(f"{name} has too many items", field=name)
        for item in value:
            _check_value(prop["items"], item, name)


def _gateway():
    from ca.tokens.gateway import TokenGateway
    svc = services()
    return TokenGateway(svc.db, svc.clock, svc.issuance(), svc.escrow_sealer(),
                        caller=caller())


def _no_store(resp):
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


def _failed(exc: CAError):
    status = next((st for cls, st in STATUS if isinstance(exc, cls)), None)
    if status is None:
        if not isinstance(exc, (IntegrityError, ConfigurationError)):
            raise exc  # the blueprint's generic handler (500, logged without details)
        status = 500  # escrow key missing or ciphertext corrupt: name it for the workstation
    resp = error(status, exc.code, exc.message, exc.field)
    body = resp.get_json()
    body["error"]["kind"] = _kind(exc)
    return _no_store(jsonify(body)), status


def _make_view(method: str, schema_name: str):
    def view():
        try:
            params = check_body(SCHEMAS[schema_name], json_body())
            result = getattr(_gateway(), method)(**params)
        except CAError as exc:
            return _failed(exc)
        return _no_store(jsonify(result))
    view.__name__ = f"tokens_{method}"
    return view


for _route, (_method, _req, _resp, _summary) in OPERATIONS.items():
    bp.add_url_rule(f"/tokens/{_route}", endpoint=f"tokens_{_method}",
                    view_func=_make_view(_method, _req), methods=["POST"])
