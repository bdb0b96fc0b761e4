"""Plans: parsing and validation of items, creation, editing, approval, scoped reads."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from ca.names import clean_text
from ca.ra.roles import Caller
from ca.ra.scope import Scope, subtree_ids
from ca.store.models import Organization, RaDomain
from ca.store.models_reorg import ITEM_KINDS, ReorgItem, ReorgJob, ReorgPlan

MAX_ITEMS = 500
MAX_SOURCES = 100
EDITABLE = ("draft", "approved")


# --- scope -----------------------------------------------------------------------------------
def plan_clause(caller: Caller):
    """Central roles see every plan; a provincial RA only the plans of its own domain."""
    if caller.is_central:
        return ReorgPlan.id.is_not(None)
    if not caller.can("read") or caller.domain_id is None:
        return ReorgPlan.id.is_(None)
    return ReorgPlan.domain_id == caller.domain_id


def get_plan(session: Session, caller: Caller, plan_id: Any) -> ReorgPlan:
    plan = None
    if isinstance(plan_id, int) and not isinstance(plan_id, bool) and 0 < plan_id < 2**31:
        plan = session.execute(select(ReorgPlan).where(
            ReorgPlan.id == plan_id, plan_clause(caller))).scalar_one_or_none()
    if plan is None:
        raise NotFound(f"no reorganisation plan with id {plan_id}", field="plan_id")
    return plan


def list_plans(session: Session, caller: Caller) -> list[ReorgPlan]:
    return list(session.execute(select(ReorgPlan).where(plan_clause(caller))
                                .order_by(ReorgPlan.id.desc())).scalars())


def items_of(session: Session, plan_id: int) -> list[ReorgItem]:
    return list(session.execute(select(ReorgItem).where(ReorgItem.plan_id == plan_id)
                                .order_by(ReorgItem.position)).scalars())


# --- parsing and validation ------------------------------------------------------------------
def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise InvalidInput(f"{field} must be a positive integer id", field=field,
                           code="wrong_type")
    return value


def _domain(session: Session, caller: Caller, ref: Any, field: str) -> RaDomain:
    """A province by id, code or name. Provincial callers cannot name other domains: the
    answer is the same as for a missing one."""
    if isinstance(ref, str):
        text = clean_text(ref, field_name=field, max_chars=128)
        dom = session.execute(select(RaDomain).where(
            (RaDomain.code == text) | (RaDomain.name == text))).scalars().first()
    else:
        dom = session.get(RaDomain, _int(ref, field))
    if dom is None or (not caller.is_central and dom.id != caller.domain_id):
        raise NotFound(f"unknown province {ref!r} (no RA domain with that id, code or name)",
                       field=field, code="unknown_unit")
    return dom


def _org(session: Session, caller: Caller, ref: Any, field: str) -> Organization:
    oid = _int(ref, field)
    try:
        return Scope(session, caller).organization(oid)
    except NotFound:
        raise NotFound(f"unknown unit {oid} (no organisation with that id)", field=field,
                       code="unknown_unit") from None


def normalise(session: Session, caller: Caller, domain_id: int | None,
              raw_items: Any) -> list[dict]:
    """Check every item against the database and each other; return canonical items.
    Raises before anything is stored: unknown units, a unit mapped twice, cycles, targets
    outside the caller's scope."""
    if not isinstance(raw_items, list) or not raw_items:
        raise InvalidInput("a plan needs a non-empty list of items", field="items")
    if len(raw_items) > MAX_ITEMS:
        raise InvalidInput(f"a plan has at most {MAX_ITEMS} items", field="items")
    out: list[dict] = []
    mapped: dict[tuple[str, int], int] = {}  # (space, id) -> item number that maps it away
    edges: dict[tuple[str, int], tuple[str, int]] = {}
    renamed: dict[tuple[str, int], int] = {}
    for n, raw in enumerate(raw_items, start=1):
        where = f"items[{n}]"
        if not isinstance(raw, dict):
            raise InvalidInput(f"{where} must be an object", field="items")
        kind = raw.get("kind")
        if kind not in ITEM_KINDS:
            raise InvalidInput(f"{where}: kind must be one of {', '.join(ITEM_KINDS)}",
                               field="kind")
        sources = raw.get("sources")
        if kind == "rename" and sources is None and "source" in raw:
            sources = [raw["source"]]
        if not isinstance(sources, list) or not sources or len(sources) > MAX_SOURCES:
            raise InvalidInput(f"{where}: give 1 to {MAX_SOURCES} sources", field="sources")
        item: dict = {"kind": kind, "sources": [], "target_id": None, "target_name": None,
                      "parent_id": None}
        if kind == "merge_province":
            if not caller.is_central or domain_id is not None:
                raise PermissionDenied("merging provinces is for the central operator "
                                       "(a central plan)", code="central_only")
            space = "domain"
            srcs = [_domain(session, caller, s, "sources") for s in sources]
            if raw.get("target") is not None:
                tgt = _domain(session, caller, raw["target"], "target")
                item["target_id"] = tgt.id
                if tgt.status != "active":
                    raise InvalidInput(f"{where}: the target province {tgt.name} is "
                                       f"{tgt.status}", field="target")
            else:
                name = raw.get("target_name")
                if not name:
                    raise InvalidInput(f"{where}: give the target province (id, code or "
                                       f"name) or target_name for a new one", field="target")
                item["target_name"] = clean_text(name, field_name="target_name",
                                                 max_chars=128)
            for d in srcs:
                if d.kind != "province":
                    raise InvalidInput(f"{where}: {d.name} is not a province", field="sources")
                if d.status != "active":
                    raise InvalidInput(f"{where}: the province {d.name} is already {d.status}",
                                       field="sources")
            item["sources"] = [d.id for d in srcs]
            target_key = ("domain", item["target_id"]) if item["target_id"] else None
        else:
            space = "org"
            srcs = [_org(session, caller, s, "sources") for s in sources]
            if domain_id is not None and any(o.domain_id != domain_id for o in srcs):
                raise NotFound(f"{where}: unknown unit (outside this plan's province)",
                               field="sources", code="unknown_unit")
            if any(not o.active for o in srcs):
                raise InvalidInput(f"{where}: a source unit is no longer active (merged or "
                                   f"closed)", field="sources")
            if len({o.domain_id for o in srcs}) > 1:
                raise InvalidInput(f"{where}: units of different provinces cannot be merged "
                                   f"in one item", field="sources", code="cross_domain")
            item["sources"] = [o.id for o in srcs]
            target_key = None
            if kind == "absorb_unit":
                tgt = _org(session, caller, raw.get("target"), "target")
                if not tgt.active or tgt.domain_id != srcs[0].domain_id:
                    raise InvalidInput(f"{where}: absorb into an active unit of the same "
                                       f"province", field="target")
                item["target_id"] = tgt.id
                target_key = ("org", tgt.id)
                inside = set().union(*(subtree_ids(session, o.id) for o in srcs))
                if tgt.id in inside:
                    raise InvalidInput(f"{where}: unit {tgt.id} cannot absorb itself or a unit "
                                       f"above it (cycle)", field="target", code="cycle")
            else:
                name = raw.get("new_name", raw.get("target_name"))
                item["target_name"] = clean_text(name, field_name="new_name", max_chars=200)
                if kind == "rename":
                    if len(srcs) != 1:
                        raise InvalidInput(f"{where}: rename takes exactly one unit",
                                           field="sources")
                    if item["target_name"] == srcs[0].name:
                        raise InvalidInput(f"{where}: the new name is the current name",
                                           field="new_name", code="no_change")
                elif raw.get("parent_id") is not None:
                    parent = _org(session, caller, raw["parent_id"], "parent_id")
                    if parent.domain_id != srcs[0].domain_id:
                        raise InvalidInput(f"{where}: the new unit's parent must be in the "
                                           f"same province", field="parent_id")
                    inside = set().union(*(subtree_ids(session, o.id) for o in srcs))
                    if parent.id in inside:
                        raise InvalidInput(f"{where}: the new unit cannot sit under a unit "
                                           f"being merged (cycle)", field="parent_id",
                                           code="cycle")
                    item["parent_id"] = parent.id
        if kind != "rename":
            for sid in item["sources"]:
                key = (space, sid)
                if key in renamed:
                    raise InvalidInput(f"{where}: {_label(session, key)} is mapped twice (also "
                                       f"renamed in items[{renamed[key]}])", field="sources",
                                       code="mapped_twice")
                if key in mapped:
                    raise InvalidInput(f"{where}: {_label(session, key)} is mapped twice (also "
                                       f"in items[{mapped[key]}])", field="sources",
                                       code="mapped_twice")
                mapped[key] = n
                if target_key is not None:
                    if target_key == key:
                        raise InvalidInput(f"{where}: {_label(session, key)} is mapped onto "
                                           f"itself (cycle)", field="target", code="cycle")
                    edges[key] = target_key
        else:
            key = ("org", item["sources"][0])
            if key in mapped or key in renamed:
                raise InvalidInput(f"{where}: {_label(session, key)} is mapped twice (also in "
                                   f"items[{mapped.get(key) or renamed.get(key)}])",
                                   field="sources", code="mapped_twice")
            renamed[key] = n
        out.append(item)
    _check_cycles(session, edges, mapped)
    return out


def _label(session: Session, key: tuple[str, int]) -> str:
    space, ident = key
    row = session.get(RaDomain if space == "domain" else Organization, ident)
    return f"{'province' if space == 'domain' else 'unit'} {row.name if row else ident} ({ident})"


def _check_cycles(session: Session, edges: dict, mapped: dict) -> None:
    """A -> B -> ... -> A is a cycle; A -> B while B is itself mapped away is a chain, which
    would leave A's people in a body that no longer exists: both are refused."""
    for start in edges:
        seen = [start]
        node = edges[start]
        while node in edges:
            if node in seen:
                path = " -> ".join(_label(session, k) for k in seen + [node])
                raise InvalidInput(f"the plan has a cycle: {path}", field="target",
                                   code="cycle")
            seen.append(node)
            node = edges[node]
        if len(seen) > 1:
            raise InvalidInput(f"{_label(session, seen[1])} is a target and is mapped away "
                               f"too (items[{mapped[seen[1]]}]); map "
                               f"{_label(session, start)} to the final body directly",
                               field="target", code="chain")


def content_hash(name: str, domain_id: int | None, items: list[dict]) -> str:
    body = json.dumps({"name": name, "domain_id": domain_id, "items": items}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def canonical_items(session: Session, plan_id: int) -> list[dict]:
    return [{"kind": i.kind, "sources": list(i.source_ids), "target_id": i.target_id,
             "target_name": i.target_name, "parent_id": i.parent_id}
            for i in items_of(session, plan_id)]


# --- create / edit / approve -----------------------------------------------------------------
def _plan_domain(session: Session, caller: Caller, domain_id: Any) -> int | None:
    if caller.is_central:
        if domain_id is None:
            return None
        return _domain(session, caller, domain_id, "domain_id").id
    if caller.domain_id is None:
        raise PermissionDenied("this account has no delegation", code="no_delegation")
    if domain_id is not None and domain_id != caller.domain_id:
        raise NotFound(f"unknown province {domain_id!r}", field="domain_id",
                       code="unknown_unit")
    return caller.domain_id


def create_plan(session: Session, caller: Caller, *, name: Any, items: Any, clock: Clock,
                domain_id: Any = None, reason: Any = None) -> ReorgPlan:
    caller.require("subscriber.write")
    title = clean_text(name, field_name="name", max_chars=200)
    why = clean_text(reason, field_name="reason", max_chars=500) if reason else None
    dom = _plan_domain(session, caller, domain_id)
    norm = normalise(session, caller, dom, items)
    now = clock.now()
    plan = ReorgPlan(name=title, domain_id=dom, state="draft", version=1,
                     content_hash=content_hash(title, dom, norm), reason=why,
                     created_by=caller.username, created_at=now, updated_at=now)
    session.add(plan)
    session.flush()
    _store_items(session, plan.id, norm)
    audit.record(session, "reorg.plan.create", actor=caller.actor, at=now,
                 target=f"reorg:{plan.id}", domain_id=dom,
                 details={"name": title, "items": len(norm), "hash": plan.content_hash})
    return plan


def _store_items(session: Session, plan_id: int, norm: list[dict]) -> None:
    for pos, it in enumerate(norm, start=1):
        session.add(ReorgItem(plan_id=plan_id, position=pos, kind=it["kind"],
                              source_ids=it["sources"], target_id=it["target_id"],
                              target_name=it["target_name"], parent_id=it["parent_id"]))
    session.flush()


def edit_plan(session: Session, caller: Caller, plan_id: Any, *, items: Any,
              clock: Clock, name: Any = None) -> ReorgPlan:
    """Replace the items. Any edit of an approved plan drops the approval."""
    plan = get_plan(session, caller, plan_id)
    caller.require("subscriber.write")
    if plan.state not in EDITABLE:
        raise Conflict(f"plan {plan.id} is {plan.state}; only a draft or approved plan can be "
                       f"edited", code="wrong_state")
    title = clean_text(name, field_name="name", max_chars=200) if name else plan.name
    norm = normalise(session, caller, plan.domain_id, items)
    new_hash = content_hash(title, plan.domain_id, norm)
    now = clock.now()
    for it in items_of(session, plan.id):
        session.delete(it)
    session.flush()
    _store_items(session, plan.id, norm)
    was = plan.state
    plan.name, plan.content_hash, plan.version = title, new_hash, plan.version + 1
    plan.updated_at, plan.dry_run = now, None
    if new_hash != plan.approved_hash:
        plan.state, plan.approved_by, plan.approved_at, plan.approved_hash = \
            "draft", None, None, None
    audit.record(session, "reorg.plan.edit", actor=caller.actor, at=now,
                 target=f"reorg:{plan.id}", domain_id=plan.domain_id,
                 details={"version": plan.version, "hash": new_hash, "was": was,
                          "approval_dropped": was == "approved" and plan.state == "draft"})
    return plan


def approve_plan(session: Session, caller: Caller, plan_id: Any, *, clock: Clock,
                 expected_hash: str | None = None) -> ReorgPlan:
    """The second person's approval (chữ ký nháy), for the exact content shown to them."""
    plan = get_plan(session, caller, plan_id)
    caller.require("request.approve")
    if plan.domain_id is None and not caller.is_central:
        raise PermissionDenied("a central plan is approved by a central operator",
                               code="central_only")
    if plan.state != "draft":
        raise Conflict(f"plan {plan.id} is {plan.state}; only a draft plan can be approved",
                       code="wrong_state")
    if caller.username == plan.created_by:
        raise PermissionDenied("the approver must be a different person from the one who "
                               "prepared the plan", code="two_person_rule")
    current = content_hash(plan.name, plan.domain_id, canonical_items(session, plan.id))
    if current != plan.content_hash or (expected_hash and expected_hash != current):
        raise Conflict("the plan changed since it was shown; look at it again before "
                       "approving", code="plan_changed")
    now = clock.now()
    plan.state, plan.approved_by, plan.approved_at = "approved", caller.username, now
    plan.approved_hash, plan.updated_at = current, now
    audit.record(session, "reorg.plan.approve", actor=caller.actor, at=now,
                 target=f"reorg:{plan.id}", domain_id=plan.domain_id,
                 details={"hash": current, "version": plan.version,
                          "created_by": plan.created_by})
    return plan


def job_of(session: Session, plan_id: int) -> ReorgJob | None:
    return session.get(ReorgJob, plan_id)
