"""OpenAPI description of transfers, the subscriber history and organisation move/merge."""
from __future__ import annotations

from ra_portal.api.openapi import DT, ID, NI, NS, QS, I, S, body, obj, ok, op, ref

POS = {"type": "integer", "minimum": 1, "maximum": 2147483647}
NOTE = {"type": "string", "maxLength": 500}
STATES = ["released", "accepted", "withdrawn", "refused"]


def _optional(schema: dict) -> dict:
    return {"required": False, "content": {"application/json": {"schema": schema}}}


SCHEMAS = {
    "Transfer": obj({
        "id": I, "state": {"type": "string", "enum": STATES},
        "direction": {"type": "string", "enum": ["incoming", "outgoing", "central"]},
        "full_name": S, "position": NS, "from_domain_name": S, "to_domain_name": S,
        "to_organization_id": I, "to_organization_name": S, "reason": NS,
        "released_by": S, "released_at": DT, "accepted_by": NS, "accepted_at": DT,
        "closed_by": NS, "closed_at": DT, "note": NS,
        "subscriber_id": {"type": "integer", "description": "not shown to the destination "
                          "before it accepts"},
        "from_organization_id": I, "from_organization_name": S},
        ["id", "state", "direction", "full_name", "from_domain_name", "to_domain_name"]),
    "NotChanged": obj({"serial": S, "code": S, "message": S}, ["serial", "code"]),
    "SubscriberHistory": obj({
        "subscriber": obj({"id": I, "full_name": S}, ["id", "full_name"]),
        "current": {"type": "boolean", "description": "true: the caller has the person now and "
                    "reads everything; false: a former domain reading its own periods"},
        "periods": {"type": ["array", "null"], "items": obj({"from": DT, "to": DT})},
        "placements": {"type": "array", "items": obj({
            "domain": S, "domain_name": S, "organization_id": NI, "organization_name": NS,
            "valid_from": DT, "valid_to": DT, "reason": NS, "transfer_id": NI})},
        "certificates": {"type": "array", "items": obj({
            "serial": S, "profile": S, "subject": S, "issued_at": DT, "not_after": DT,
            "revoked_at": DT, "revocation_reason": NS})},
        "requests": {"type": "array", "items": ref("Request")},
        "events": {"type": "array", "items": obj({"seq": I, "at": DT, "action": S,
                                                  "actor": S, "target": NS})}},
        ["subscriber", "current", "placements", "certificates", "requests", "events"]),
}

MOVED = obj({"subscriber": ref("Subscriber"), "previous_organization_id": I,
             "change_requests": {"type": "array", "items": ref("Request")},
             "certificates_needing_csr": {"type": "array", "items": S},
             "not_changed": {"type": "array", "items": ref("NotChanged")}},
            ["subscriber", "change_requests"])
_transfer_responses = ok(MOVED, "200", "Moved inside the domain; change requests raised",
                         403, 409, 415)
_transfer_responses["202"] = {"description": "Released to another RA domain: the person moves "
                              "when the destination accepts",
                              "content": {"application/json": {"schema": ref("Transfer")}}}

PATHS = {
    "/subscribers/{subscriber_id}/transfer": {"post": op(
        "Transfer a person to another unit. Inside the domain the person moves at once and each "
        "valid certificate gets a change request (affiliationChanged, same key, same expiry); "
        "a unit of another RA domain starts a release (202) that the destination accepts",
        _transfer_responses, [ID("subscriber_id")],
        body(obj({"organization_id": POS,
                  "reason": {"type": ["string", "null"], "maxLength": 500}},
                 ["organization_id"], extra=False)))},
    "/subscribers/{subscriber_id}/history": {"get": op(
        "The person's history: units over time, certificates, requests, events. The domain "
        "that has the person reads everything; a former domain reads its own custody periods",
        ok(ref("SubscriberHistory")), [ID("subscriber_id")])},
    "/transfers": {"get": op(
        "Releases the caller's domain made (outgoing) or received (incoming), newest first",
        ok({"type": "array", "items": ref("Transfer")}),
        [QS("direction", {"type": "string", "enum": ["incoming", "outgoing"]}),
         QS("state", {"type": "string", "enum": STATES})])},
    "/transfers/{transfer_id}": {"get": op("One transfer", ok(ref("Transfer")),
                                           [ID("transfer_id")])},
    "/transfers/{transfer_id}/accept": {"post": op(
        "Accept a release (an officer of the destination, not the one who released): the "
        "person, their open requests and key devices move; change requests are raised",
        ok({"allOf": [ref("Transfer"), obj({
            "change_requests": {"type": "array", "items": ref("Request")},
            "not_changed": {"type": "array", "items": ref("NotChanged")},
            "moved_requests": {"type": "array", "items": I},
            "moved_devices": {"type": "array", "items": I}})]}, "200", "OK", 403, 409, 415),
        [ID("transfer_id")],
        _optional(obj({"organization_id": {**POS, "type": ["integer", "null"]}},
                      extra=False)))},
    "/transfers/{transfer_id}/refuse": {"post": op(
        "Refuse a release (destination)", ok(ref("Transfer"), "200", "OK", 403, 409, 415),
        [ID("transfer_id")], _optional(obj({"note": {**NOTE, "type": ["string", "null"]}},
                                           extra=False)))},
    "/transfers/{transfer_id}/withdraw": {"post": op(
        "Withdraw a release (source)", ok(ref("Transfer"), "200", "OK", 403, 409, 415),
        [ID("transfer_id")], _optional(obj({"note": {**NOTE, "type": ["string", "null"]}},
                                           extra=False)))},
    "/organizations/{organization_id}/move": {"post": op(
        "Give an organisation a new parent in the same domain (null: the top); creates a "
        "version", ok(ref("OrganizationVersion"), "200", "OK", 403, 415),
        [ID("organization_id")],
        body(obj({"parent_id": {"type": ["integer", "null"], "minimum": 1,
                                "maximum": 2147483647},
                  "reason": {"type": "string", "minLength": 1, "maxLength": 500}},
                 ["parent_id", "reason"], extra=False)))},
    "/organizations/{organization_id}/merge": {"post": op(
        "Merge an organisation into another of the same domain: it becomes inactive, its "
        "units move under the target", ok(obj({"into": ref("Organization"),
                                               "merged": ref("Organization")},
                                              ["into", "merged"]), "200", "OK", 403, 415),
        [ID("organization_id")],
        body(obj({"into_id": POS,
                  "reason": {"type": "string", "minLength": 1, "maxLength": 500}},
                 ["into_id", "reason"], extra=False)))},
}
