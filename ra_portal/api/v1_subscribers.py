"""/api/v1 organisations and subscribers (Form 01), every query through the caller's scope."""
from __future__ import annotations

from flask import request

from ca.errors import InvalidInput
from ca.ra import organizations as ra_orgs
from ca.ra import subscribers as ra_subscribers
from ca.ra.scope import Scope
from ca.store.models import Organization, Subscriber
from ra_portal import services
from ra_portal.api import bp, caller, json_body, only_fields


def org_dict(o: Organization) -> dict:
    return {"id": o.id, "name": o.name, "parent_id": o.parent_id, "domain": o.domain.code,
            "kind": o.kind, "level": o.level, "active": o.active}


def subscriber_dict(s: Subscriber) -> dict:
    return {"id": s.id, "kind": s.kind, "full_name": s.full_name, "id_type": s.id_type,
            "id_number": s.id_number, "email": s.email, "mobile": s.mobile,
            "position": s.position, "device_type": s.device_type,
            "date_of_birth": s.date_of_birth.isoformat() if s.date_of_birth else None,
            "organization_id": s.organization_id, "domain": s.domain.code,
            "username": s.username, "created_at": s.created_at.isoformat()}


def query_int(name: str, default: int | None = None, *, low: int = 1,
              high: int = 2**31 - 1) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}", field=name)
    return int(raw)


def query_text(name: str, max_len: int = 100) -> str | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if len(raw) > max_len:
        raise InvalidInput(f"{name} is at most {max_len} characters", field=name)
    return raw


def page_dict(page, convert) -> dict:
    return {"items": [convert(x) for x in page.items], "page": page.page,
            "per_page": page.per_page, "total": page.total}


@bp.get("/organizations")
def organizations():
    svc = services()
    with svc.db.transaction() as s:
        rows = ra_subscribers.list_organizations(s, caller(), query_text("q"))
        return [org_dict(o) for o in rows]


@bp.get("/organizations/<int:organization_id>")
def organization(organization_id: int):
    svc = services()
    with svc.db.transaction() as s:
        org = Scope(s, caller()).organization(organization_id)
        return {**org_dict(org), "version": ra_orgs.version_number(s, org.id)}  # versions


@bp.get("/subscribers")
def subscribers():
    svc = services()
    with svc.db.transaction() as s:
        page = ra_subscribers.search_subscribers(
            s, caller(), q=query_text("q"), organization_id=query_int("organization_id"),
            page=query_int("page", 1, high=10**6), per_page=query_int("per_page", 50, high=200))
        return page_dict(page, subscriber_dict)


@bp.post("/subscribers")
def create_subscriber():
    svc = services()
    body = json_body()
    with svc.db.transaction() as s:
        sub = ra_subscribers.register(s, svc.clock, caller(), body)
        return subscriber_dict(sub), 201


@bp.get("/subscribers/<int:subscriber_id>")
def subscriber(subscriber_id: int):
    svc = services()
    with svc.db.transaction() as s:
        return subscriber_dict(Scope(s, caller()).subscriber(subscriber_id))


@bp.post("/subscribers/<int:subscriber_id>/transfer")
def transfer(subscriber_id: int):
    """Within the domain: move, and each valid certificate gets a `change` request
    (affiliationChanged, same key, same expiry). To a unit of another RA domain: a release
    (202) that the destination accepts (docs/transfers.md; ra_portal/api/v1_transfers.py)."""
    from ca.ra import transfers as ra_transfers
    from ra_portal.api.v1_transfers import transfer_response
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        Scope(s, who).subscriber(subscriber_id)  # 404 before the body is looked at
        body = only_fields(json_body(), {"organization_id", "reason"})
        result = ra_transfers.transfer(s, svc.clock, who, subscriber_id,
                                       body.get("organization_id"), svc.profiles,
                                       reason=body.get("reason"))
        return transfer_response(s, result, svc.clock.now())
