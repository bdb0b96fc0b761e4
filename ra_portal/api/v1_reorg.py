"""/api/v1/reorg: reorganisation plans (list, create, edit, dry run, approve, start, pause,
cancel, retry, progress, failures). Thin: the rules live in ca.reorg."""
from __future__ import annotations

from ca.errors import InvalidInput
from ca.reorg import executor
from ca.reorg.dryrun import dry_run
from ca.reorg.impact import domain_names
from ca.reorg.plans import (approve_plan, create_plan, edit_plan, get_plan, items_of,
                            list_plans)
from ca.reorg.throttle import ca_sign_rate
from ra_portal import services
from ra_portal.api import bp, caller, json_body, only_fields

_iso = lambda t: t.isoformat() if t else None  # noqa: E731


def plan_dict(s, plan, with_items: bool = False) -> dict:
    d = {"id": plan.id, "name": plan.name, "state": plan.state, "version": plan.version,
         "content_hash": plan.content_hash, "domain_id": plan.domain_id,
         "created_by": plan.created_by, "created_at": _iso(plan.created_at),
         "approved_by": plan.approved_by, "approved_at": _iso(plan.approved_at),
         "reason": plan.reason, "dry_run": plan.dry_run}
    if with_items:
        names = domain_names(s)
        d["items"] = [{"position": i.position, "kind": i.kind, "sources": list(i.source_ids),
                       "target_id": i.target_id, "target_name": i.target_name,
                       "parent_id": i.parent_id,
                       "source_names": [names.get(x) for x in i.source_ids]
                       if i.kind == "merge_province" else None}
                      for i in items_of(s, plan.id)]
    return d



@bp.get("/reorg/plans")
def reorg_plans():
    svc = services()
    with svc.db.transaction() as s:
        return [plan_dict(s, p) for p in list_plans(s, caller())]


@bp.post("/reorg/plans")
def reorg_create():
    svc = services()
    body = json_body()
    only_fields(body, {"name", "items", "domain_id", "reason"})
    with svc.db.transaction() as s:
        plan = create_plan(s, caller(), name=body.get("name"), items=body.get("items"),
                           domain_id=body.get("domain_id"), reason=body.get("reason"),
                           clock=svc.clock)
        return plan_dict(s, plan, True), 201


@bp.get("/reorg/plans/<int:plan_id>")
def reorg_plan(plan_id: int):
    svc = services()
    with svc.db.transaction() as s:
        return plan_dict(s, get_plan(s, caller(), plan_id), True)


@bp.put("/reorg/plans/<int:plan_id>")
def reorg_edit(plan_id: int):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        get_plan(s, who, plan_id)  # 404 before the body is looked at
        body = json_body()
        only_fields(body, {"name", "items"})
        plan = edit_plan(s, who, plan_id, items=body.get("items"), name=body.get("name"),
                         clock=svc.clock)
        return plan_dict(s, plan, True)


@bp.post("/reorg/plans/<int:plan_id>/dry-run")
def reorg_dry_run(plan_id: int):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        get_plan(s, who, plan_id)
    rate = ca_sign_rate(svc.db, svc.keys, seconds=0.3)
    with svc.db.transaction() as s:
        return dry_run(s, who, plan_id, clock=svc.clock, hsm_rate=rate)


@bp.post("/reorg/plans/<int:plan_id>/approve")
def reorg_approve(plan_id: int):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        get_plan(s, who, plan_id)
        expected = None
        from flask import request
        if request.content_length:
            body = json_body()
            only_fields(body, {"content_hash"})
            expected = body.get("content_hash")
            if expected is not None and not isinstance(expected, str):
                raise InvalidInput("content_hash must be a string", field="content_hash")
        plan = approve_plan(s, who, plan_id, clock=svc.clock, expected_hash=expected)
        return plan_dict(s, plan)


def _control(fn, plan_id: int):
    svc = services()
    who = caller()
    plan = fn(svc.db, who, plan_id, svc.clock)
    with svc.db.transaction() as s:
        return plan_dict(s, get_plan(s, who, plan.id))


@bp.post("/reorg/plans/<int:plan_id>/start")
def reorg_start(plan_id: int):
    return _control(executor.start, plan_id)


@bp.post("/reorg/plans/<int:plan_id>/pause")
def reorg_pause(plan_id: int):
    return _control(executor.pause, plan_id)


@bp.post("/reorg/plans/<int:plan_id>/cancel")
def reorg_cancel(plan_id: int):
    return _control(executor.cancel, plan_id)


@bp.post("/reorg/plans/<int:plan_id>/retry-failed")
def reorg_retry(plan_id: int):
    return _control(executor.retry_failed, plan_id)


@bp.get("/reorg/plans/<int:plan_id>/progress")
def reorg_progress(plan_id: int):
    svc = services()
    return executor.progress(svc.db, caller(), plan_id, svc.clock)


@bp.get("/reorg/plans/<int:plan_id>/failures")
def reorg_failures(plan_id: int):
    svc = services()
    return executor.failures(svc.db, caller(), plan_id)
