"""The structural half of a plan, in one transaction: organisations and domains change, the
work items (one per certificate) are written. Certificates are changed afterwards."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import FixedClock
from ca.names import fold
from ca.ra import organizations as orgs
from ca.ra.roles import Caller
from ca.reorg import impact
from ca.registry import add_domain
from ca.store.models import Organization, RaDomain, Subscriber
from ca.store.models_ra import RaRequest, RaUser
from ca.store.models_reorg import ReorgItem, ReorgPlan, ReorgWork
from ca.store.models_tokens import KeyDevice

TOP_PREFIX = "Ủy ban nhân dân "


def short_name(full: str) -> str:
    for prefix in ("Thành phố ", "Tỉnh "):
        if full.startswith(prefix):
            return full[len(prefix):]
    return full


def domain_code(full: str) -> str:
    return fold(short_name(full)).replace(" ", "").replace("-", "")


def find_or_create_domain(session: Session, name: str, at: dt.datetime) -> tuple[RaDomain, bool]:
    dom = session.execute(select(RaDomain).where(
        (RaDomain.name == name) | (RaDomain.code == domain_code(name)))).scalars().first()
    if dom is not None:
        return dom, False
    return add_domain(session, code=domain_code(name), name=name, kind="province",
                      locality=short_name(name), at=at), True


def write_work(session: Session, plan: ReorgPlan, items: list[ReorgItem],
               now: dt.datetime) -> int:
    rows = impact.affected(session, items, now)
    if rows:
        session.execute(insert(ReorgWork), [
            {"plan_id": plan.id, "item_id": r.item_id, "subscriber_id": r.subscriber_id,
             "old_serial": r.serial, "profile": r.profile, "action": r.action,
             "reason": r.reason, "state": "pending", "attempts": 0} for r in rows])
    return len(rows)


def apply(session: Session, plan: ReorgPlan, items: list[ReorgItem], *, now: dt.datetime,
          actor: str) -> int:
    """Write the work items (decided on the organisation as it is before the change), then
    change the organisation. Returns the number of work items."""
    total = write_work(session, plan, items, now)
    why = f"reorganisation plan {plan.id}: {plan.name}"
    for item in items:
        if item.kind == "merge_province":
            _merge_province(session, plan, item, now=now, actor=actor, why=why)
        else:
            _org_item(session, plan, item, now=now, actor=actor, why=why)
    return total


def _move_subscribers(session: Session, from_org_ids: list[int], to_org: Organization,
                      now: dt.datetime, persons_only: bool = True) -> int:
    q = update(Subscriber).where(Subscriber.organization_id.in_(from_org_ids))
    if persons_only:
        q = q.where(Subscriber.kind != "organization")
    return session.execute(q.values(organization_id=to_org.id, domain_id=to_org.domain_id,
                                    updated_at=now)).rowcount


def _org_item(session: Session, plan: ReorgPlan, item: ReorgItem, *, now: dt.datetime,
              actor: str, why: str) -> None:
    caller = Caller.system("reorg")
    clock = FixedClock(now)
    if item.kind == "rename":
        org = session.get(Organization, item.source_ids[0])
        old = org.name
        orgs.rename(session, caller, org.id, item.target_name, why, clock=clock)
        session.execute(update(Subscriber).where(
            Subscriber.kind == "organization", Subscriber.organization_id == org.id,
            Subscriber.full_name == old).values(full_name=item.target_name, updated_at=now))
        return
    if item.kind == "absorb_unit":
        target = orgs.merge(session, caller, list(item.source_ids), reason=why, clock=clock,
                            into_id=item.target_id)
    else:
        target = orgs.merge(session, caller, list(item.source_ids), reason=why, clock=clock,
                            new_name=item.target_name, parent_id=item.parent_id)
        _, seals, _ = impact.item_decisions(session, item)
        keeper = [sid for sid, act in seals.items() if act == "change"]
        for sid in keeper:  # the first source's seal becomes the new body's seal
            sub = session.get(Subscriber, sid)
            sub.organization_id, sub.full_name, sub.updated_at = target.id, target.name, now
    moved = _move_subscribers(session, list(item.source_ids), target, now)
    audit.record(session, "reorg.unit.apply", actor=actor, at=now,
                 target=f"organization:{target.id}", domain_id=target.domain_id,
                 details={"plan": plan.id, "kind": item.kind, "sources": list(item.source_ids),
                          "subscribers_moved": moved})


def _merge_province(session: Session, plan: ReorgPlan, item: ReorgItem, *, now: dt.datetime,
                    actor: str, why: str) -> None:
    if item.target_id is not None:
        target, created = session.get(RaDomain, item.target_id), False
    else:
        target, created = find_or_create_domain(session, item.target_name, now)
        item.target_id = target.id
    if created:
        audit.record(session, "reorg.domain.create", actor=actor, at=now,
                     target=f"domain:{target.id}", domain_id=target.id,
                     details={"plan": plan.id, "name": target.name, "code": target.code})
    target_tops = impact.top_agencies(session, target.id)
    source_tops = [t for d in item.source_ids for t in impact.top_agencies(session, d)]
    keeper = target_tops[0] if target_tops else (source_tops[0] if source_tops else None)
    for did in item.source_ids:
        src = session.get(RaDomain, did)
        members = session.execute(select(Organization).where(
            Organization.domain_id == did).order_by(Organization.id)).scalars().all()
        for org in members:
            org.domain_id = target.id
            orgs.record_version(session, org, at=now, actor=actor,
                                reason=f"province {src.name} merged into {target.name} ({why})")
        counts = {
            "subscribers": session.execute(update(Subscriber).where(
                Subscriber.domain_id == did).values(domain_id=target.id, updated_at=now)
            ).rowcount,
            "users": session.execute(update(RaUser).where(RaUser.domain_id == did)
                                     .values(domain_id=target.id)).rowcount,
            "requests": session.execute(update(RaRequest).where(RaRequest.domain_id == did)
                                        .values(domain_id=target.id)).rowcount,
            "key_devices": session.execute(update(KeyDevice).where(
                KeyDevice.domain_id == did).values(domain_id=target.id)).rowcount,
            "organizations": len(members),
        }
        src.status, src.merged_into_id = "merged", target.id
        audit.record(session, "reorg.domain.merge", actor=actor, at=now,
                     target=f"domain:{did}", domain_id=target.id,
                     details={"plan": plan.id, "from": src.name, "into": target.name,
                              **counts})
    session.flush()
    if keeper is None:
        return
    if not target_tops and keeper.name.startswith(TOP_PREFIX):
        old = keeper.name  # the first province's committee becomes the new province's
        keeper.name = TOP_PREFIX + target.name
        orgs.record_version(session, keeper, at=now, actor=actor,
                            reason=f"renamed for the new province ({why})")
        session.execute(update(Subscriber).where(
            Subscriber.kind == "organization", Subscriber.organization_id == keeper.id,
            Subscriber.full_name == old).values(full_name=keeper.name, updated_at=now))
    for top in source_tops:
        if top.id == keeper.id:
            continue
        children = session.execute(select(Organization).where(
            Organization.parent_id == top.id, Organization.active.is_(True))
            .order_by(Organization.id)).scalars().all()
        for child in children:
            orgs.reparent(session, child, keeper)
            orgs.record_version(session, child, at=now, actor=actor,
                                reason=f"parent {top.id} absorbed into {keeper.id} ({why})")
        _move_subscribers(session, [top.id], keeper, now)
        top.active = False
        orgs.record_version(session, top, at=now, actor=actor, reason=why,
                            merged_into_id=keeper.id)


def work_counts(session: Session, plan_id: int) -> dict[str, int]:
    rows = session.execute(select(ReorgWork.state, func.count()).where(
        ReorgWork.plan_id == plan_id).group_by(ReorgWork.state)).all()
    out = {"pending": 0, "issuing": 0, "done": 0, "failed": 0, "cancelled": 0}
    out.update({k: v for k, v in rows})
    return out
