"""OpenAPI description of reorganisation plans (/reorg/plans, docs/reorganisation.md)."""
from __future__ import annotations

from ra_portal.api.openapi import DT, ID, NI, NS, I, S, body, obj, ok, op, ref

POS = {"type": "integer", "minimum": 1, "maximum": 2147483647}
KINDS = ["merge_province", "absorb_unit", "merge_units_new", "rename"]
STATES = ["draft", "approved", "running", "paused", "cancelled", "done"]
NUM = {"type": ["number", "null"]}
REF = {"anyOf": [POS, {"type": "string", "minLength": 1, "maxLength": 128}]}

ITEM_IN = obj({
    "kind": {"type": "string", "enum": KINDS},
    "sources": {"type": "array", "minItems": 1, "maxItems": 100, "items": REF,
                "description": "merge_province: RA domains (id, code or name); otherwise "
                               "organisation ids"},
    "target": {"anyOf": [REF, {"type": "null"}],
               "description": "merge_province: the absorbing province; absorb_unit: the "
                              "absorbing organisation"},
    "target_name": {"type": ["string", "null"], "maxLength": 200,
                    "description": "merge_province into a province that does not exist yet"},
    "new_name": {"type": ["string", "null"], "maxLength": 200,
                 "description": "merge_units_new / rename: the new name"},
    "parent_id": {"anyOf": [POS, {"type": "null"}]},
}, ["kind", "sources"], extra=False)

SCHEMAS = {
    "ReorgPlan": obj({
        "id": I, "name": S, "state": {"type": "string", "enum": STATES}, "version": I,
        "content_hash": S, "domain_id": NI, "created_by": S, "created_at": DT,
        "approved_by": NS, "approved_at": DT, "reason": NS,
        "dry_run": {"type": ["object", "null"]},
        "items": {"type": "array", "items": obj({
            "position": I, "kind": {"type": "string", "enum": KINDS},
            "sources": {"type": "array", "items": I}, "target_id": NI,
            "target_name": NS, "parent_id": NI,
            "source_names": {"type": ["array", "null"], "items": NS}})}},
        ["id", "name", "state", "version", "content_hash"]),
    "ReorgDryRun": obj({
        "subscribers": I, "certificates": I, "personal_change": I, "seal_change": I,
        "seal_revoke": I, "device_change": I, "changes": I, "signatures": I,
        "hsm_rate": NUM, "share": {"type": "number"}, "estimated_seconds": NUM,
        "by_target": {"type": "array", "items": obj({"target": S, "change": I,
                                                     "revoke": I})},
        "plan_version": I, "content_hash": S,
        "hsm_rate_source": {"type": ["string", "null"],
                            "enum": ["measured", "cached", "given", None]},
        "hsm_rate_measured_at": DT, "hsm_rate_age_seconds": NUM},
        ["subscribers", "certificates", "personal_change", "seal_change", "seal_revoke",
         "estimated_seconds"]),
    "ReorgProgress": obj({
        "plan_id": I, "state": {"type": "string", "enum": STATES}, "total": I, "pending": I,
        "issuing": I, "done": I, "failed": I, "cancelled": I, "percent": {"type": "number"},
        "phase": NS, "rate": NUM, "eta_seconds": NUM, "worker": NS, "heartbeat_at": NS,
        "last_error": NS, "share": NUM, "hsm_rate": NUM},
        ["plan_id", "state", "total", "done", "failed", "percent"]),
    "ReorgFailure": obj({"work_id": I, "subscriber_id": I, "full_name": NS, "serial": S,
                         "action": S, "attempts": I, "error": NS},
                        ["work_id", "subscriber_id", "serial", "error"]),
}

_plan = ok(ref("ReorgPlan"), "200", "The plan", 403, 409)
_new = ok(ref("ReorgPlan"), "201", "Created (draft)", 403, 415)
_new.pop("200", None)

PLAN = [ID("plan_id")]
PATHS = {
    "/reorg/plans": {
        "get": op("Reorganisation plans in the caller's scope (a province sees its own)",
                  ok({"type": "array", "items": ref("ReorgPlan")})),
        "post": op("Describe a reorganisation (draft). Refused before anything is stored: "
                   "unknown units, a unit mapped twice, cycles, targets outside the scope",
                   _new, request_body=body(obj({
                       "name": {"type": "string", "minLength": 1, "maxLength": 200},
                       "items": {"type": "array", "minItems": 1, "maxItems": 500,
                                 "items": ITEM_IN},
                       "domain_id": {"anyOf": [REF, {"type": "null"}]},
                       "reason": {"type": ["string", "null"], "maxLength": 500}},
                       ["name", "items"], extra=False)))},
    "/reorg/plans/{plan_id}": {
        "get": op("One plan with its items and last dry run", ok(ref("ReorgPlan")), PLAN),
        "put": op("Replace the items (and name); an approved plan goes back to draft",
                  ok(ref("ReorgPlan"), "200", "Edited", 403, 409, 415), PLAN,
                  body(obj({"name": {"type": ["string", "null"], "maxLength": 200},
                            "items": {"type": "array", "minItems": 1, "maxItems": 500,
                                      "items": ITEM_IN}}, ["items"], extra=False)))},
    "/reorg/plans/{plan_id}/dry-run": {"post": op(
        "What the plan would change and how long it takes at the HSM rate measured now",
        ok(ref("ReorgDryRun"), "200", "Figures"), PLAN)},
    "/reorg/plans/{plan_id}/approve": {"post": op(
        "Second-person approval of the plan's current content (optionally of content_hash)",
        ok(ref("ReorgPlan"), "200", "Approved", 403, 409, 415), PLAN,
        {"required": False, "content": {"application/json": {"schema": obj(
            {"content_hash": {"type": ["string", "null"], "maxLength": 64}}, extra=False)}}})},
    "/reorg/plans/{plan_id}/start": {"post": op(
        "Queue an approved or paused plan for the worker (govca reorg run)", _plan, PLAN)},
    "/reorg/plans/{plan_id}/pause": {"post": op("Pause after the current batch", _plan,
                                                PLAN)},
    "/reorg/plans/{plan_id}/cancel": {"post": op(
        "Cancel the items not started (the one in flight is finished)", _plan, PLAN)},
    "/reorg/plans/{plan_id}/retry-failed": {"post": op(
        "Put the failed items back for the worker", _plan, PLAN)},
    "/reorg/plans/{plan_id}/progress": {"get": op(
        "Counters, rate and ETA of the job", ok(ref("ReorgProgress")), PLAN)},
    "/reorg/plans/{plan_id}/failures": {"get": op(
        "Failed items, each with the subscriber and the reason",
        ok({"type": "array", "items": ref("ReorgFailure")}), PLAN)},
}
