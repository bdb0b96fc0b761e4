"""/api/v1 transfers of staff between RA domains, the subscriber's history, and organisation
move/merge (issue 4). Thin: ca.ra.transfers and ca.ra.organizations decide everything."""
from __future__ import annotations

from flask import request

from ca.errors import InvalidInput, NotFound
from ca.ra import organizations as ra_orgs
from ca.ra import requests as ra_requests
from ca.ra import transfers as ra_transfers
from ca.ra.scope import Scope, within
from ca.store.models_transfer import TRANSFER_STATES
from ra_portal import services
from ra_portal.api import bp, caller, json_body, only_fields
from ra_portal.api.v1_subscribers import org_dict, query_text, subscriber_dict

iso = lambda v: v.isoformat() if v else None  # noqa: E731



def _optional_body(allowed: set[str]) -> dict:
    return only_fields(json_body() if request.content_length else {}, allowed)


def transfer_response(s, result, now):
    """POST /subscribers/{id}/transfer: 200 with the move, or 202 with the release."""
    if isinstance(result, ra_transfers.Moved):
        return {"subscriber": subscriber_dict(result.subscriber),
                "previous_organization_id": result.previous_organization_id,
                "change_requests": [ra_requests.summary(r, now) for r in result.change_requests],
                "certificates_needing_csr": [x["serial"] for x in result.not_changed],
                "not_changed": result.not_changed}
    return ra_transfers.transfer_dict(s, result, "source"), 202


@bp.get("/subscribers/<int:subscriber_id>/history")
def subscriber_history(subscriber_id: int):
    svc = services()
    with svc.db.transaction() as s:
        h = ra_transfers.history(s, caller(), subscriber_id)
        sub = h["subscriber"]
        now = svc.clock.now()
        person = {"id": sub.id, "full_name": sub.full_name, "kind": sub.kind,
                  "id_type": sub.id_type, "id_number": sub.id_number}
        if h["current"]:
            person = subscriber_dict(sub)
        return {
            "subscriber": person, "current": h["current"],
            "periods": None if h["periods"] is None else [
                {"from": iso(a), "to": iso(b)} for a, b in h["periods"]],
            "placements": [{**p, "valid_from": iso(p["valid_from"]),
                            "valid_to": iso(p["valid_to"])} for p in h["placements"]],
            "certificates": [{"serial": c.serial, "profile": c.profile, "subject": c.subject,
                              "issued_at": iso(c.issued_at), "not_after": iso(c.not_after),
                              "revoked_at": iso(c.revoked_at)
                              if h["current"] or within(h['periods'], c.revoked_at) else None,
                              "revocation_reason": c.revocation_reason
                              if h["current"] or within(h['periods'], c.revoked_at) else None}
                             for c in h["certificates"]],
            "requests": [ra_requests.summary(r, now) for r in h["requests"]],
            "events": [{"seq": e.seq, "at": iso(e.at), "action": e.action, "actor": e.actor,
                        "target": e.target} for e in h["events"]],
        }


@bp.get("/transfers")
def transfers():
    svc = services()
    direction = query_text("direction", 16)
    state = query_text("state", 16)
    if state is not None and state not in TRANSFER_STATES:
        raise InvalidInput(f"state is one of {', '.join(TRANSFER_STATES)}", field="state")
    with svc.db.transaction() as s:
        rows = ra_transfers.list_transfers(s, caller(), direction or None, state)
        return [ra_transfers.transfer_dict(s, t, side) for t, side in rows]


@bp.get("/transfers/<int:transfer_id>")
def transfer_one(transfer_id: int):
    svc = services()
    with svc.db.transaction() as s:
        t, side = ra_transfers.get_transfer(s, caller(), transfer_id)
        return ra_transfers.transfer_dict(s, t, side)


@bp.post("/transfers/<int:transfer_id>/accept")
def transfer_accept(transfer_id: int):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        ra_transfers.get_transfer(s, who, transfer_id)  # 404 before the body is looked at
        body = _optional_body({"organization_id"})
        res = ra_transfers.accept(s, svc.clock, who, transfer_id, svc.profiles,
                                  organization_id=body.get("organization_id"))
        now = svc.clock.now()
        return {**ra_transfers.transfer_dict(s, res.transfer, "destination"),
                "change_requests": [ra_requests.summary(r, now) for r in res.change_requests],
                "not_changed": res.not_changed, "moved_requests": res.moved_requests,
                "moved_devices": res.moved_devices}


def _close(transfer_id: int, action):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        ra_transfers.get_transfer(s, who, transfer_id)
        body = _optional_body({"note"})
        t = action(s, svc.clock, who, transfer_id, body.get("note"))
        _, side = ra_transfers.get_transfer(s, who, transfer_id)
        return ra_transfers.transfer_dict(s, t, side)


@bp.post("/transfers/<int:transfer_id>/refuse")
def transfer_refuse(transfer_id: int):
    return _close(transfer_id, ra_transfers.refuse)


@bp.post("/transfers/<int:transfer_id>/withdraw")
def transfer_withdraw(transfer_id: int):
    return _close(transfer_id, ra_transfers.withdraw)


# --- organisations: move and merge (issue 4) ------------------------------------------------
@bp.post("/organizations/<int:organization_id>/move")
def move_organization(organization_id: int):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        Scope(s, who).organization(organization_id)  # 404 before the body is looked at
        body = only_fields(json_body(), {"parent_id", "reason"})
        if "parent_id" not in body:
            raise InvalidInput("parent_id is required (null: the top of the domain)",
                               field="parent_id", code="required")
        ver = ra_orgs.move(s, who, organization_id, body["parent_id"], body.get("reason"),
                           clock=svc.clock)
        return ra_orgs.version_dict(ver)


@bp.post("/organizations/<int:organization_id>/merge")
def merge_organization(organization_id: int):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        Scope(s, who).organization(organization_id)
        body = only_fields(json_body(), {"into_id", "reason"})
        if body.get("into_id") is None:
            raise InvalidInput("into_id is required", field="into_id", code="required")
        into = body["into_id"]
        if isinstance(into, int) and not isinstance(into, bool):
            try:
                Scope(s, who).organization(into)
            except NotFound:
                raise InvalidInput(f"unknown organisation {into}", field="into_id",
                                   code="unknown_organization") from None
        target = ra_orgs.merge(s, who, [organization_id], reason=body.get("reason"),
                               clock=svc.clock, into_id=into)
        return {"into": {**org_dict(target), "version": ra_orgs.version_number(s, target.id)},
                "merged": {**org_dict(Scope(s, who).organization(organization_id)),
                           "version": ra_orgs.version_number(s, organization_id)}}
