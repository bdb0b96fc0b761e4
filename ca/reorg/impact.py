"""What a plan touches: the affected subscribers and, per valid certificate, change or revoke.

Rules (DOMAIN.md, "The 2025 reorganisation"):
- people and devices of an affected body: their certificate is changed (re-certified with the
  new subject, same key, same expiry) and the old one revoked `affiliationChanged`;
- a body absorbed into an existing one: its seal certificate is revoked
  `cessationOfOperation`;
- bodies merged into a new one: the first source's seal is changed (it becomes the new body's
  seal), the other seals are revoked `cessationOfOperation`;
- a province merged into another: its top agencies (parent-less, e.g. the provincial People's
  Committee) are absorbed into the target's top agency, or, for a new province, the first one
  becomes the new province's and the others are absorbed.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.ra.scope import subtree_ids
from ca.store.models import Certificate, Organization, RaDomain, Subscriber
from ca.store.models_reorg import ReorgItem

CHANGE_REASON = "affiliationChanged"
ABSORBED_REASON = "cessationOfOperation"


@dataclass(frozen=True)
class Affected:
    item_id: int
    subscriber_id: int
    subscriber_kind: str
    serial: str
    profile: str
    action: str  # change | revoke
    reason: str
    target_domain_id: int | None  # the province the subscriber ends up in (None: new one)


def top_agencies(session: Session, domain_id: int) -> list[Organization]:
    return list(session.execute(select(Organization).where(
        Organization.domain_id == domain_id, Organization.parent_id.is_(None),
        Organization.kind == "agency", Organization.active.is_(True))
        .order_by(Organization.id)).scalars())


def _seal_orgs(session: Session, org_ids) -> dict[int, int]:
    """organisation id -> its seal subscriber id (kind organization), first by id."""
    rows = session.execute(select(Subscriber.organization_id, Subscriber.id).where(
        Subscriber.kind == "organization", Subscriber.organization_id.in_(list(org_ids)))
        .order_by(Subscriber.id)).all()
    out: dict[int, int] = {}
    for org_id, sid in rows:
        out.setdefault(org_id, sid)
    return out


def item_decisions(session: Session, item: ReorgItem) -> tuple[set[int], dict[int, str],
                                                                   int | None]:
    """(affected subscriber ids, {seal subscriber id: 'change'|'revoke'} for seals of the
    bodies merged away, target domain)."""
    seals: dict[int, str] = {}
    if item.kind == "merge_province":
        subs = set(session.execute(select(Subscriber.id).where(
            Subscriber.domain_id.in_(item.source_ids))).scalars())
        tops = [t for d in item.source_ids for t in top_agencies(session, d)]
        target_tops = top_agencies(session, item.target_id) if item.target_id else []
        keeper = None if target_tops else (tops[0].id if tops else None)
        seal_of = _seal_orgs(session, [t.id for t in tops])
        for t in tops:
            if t.id in seal_of:
                seals[seal_of[t.id]] = "change" if t.id == keeper else "revoke"
        return subs, seals, item.target_id
    inside: set[int] = set()
    for s in item.source_ids:
        inside |= subtree_ids(session, s)
    subs = set(session.execute(select(Subscriber.id).where(
        Subscriber.organization_id.in_(inside))).scalars()) if inside else set()
    if item.kind == "absorb_unit":
        for sid in _seal_orgs(session, item.source_ids).values():
            seals[sid] = "revoke"
    elif item.kind == "merge_units_new":
        seal_of = _seal_orgs(session, item.source_ids)
        keeper = next((seal_of[s] for s in item.source_ids if s in seal_of), None)
        for sid in seal_of.values():
            seals[sid] = "change" if sid == keeper else "revoke"
    org = session.get(Organization, item.source_ids[0])
    return subs, seals, org.domain_id if org else None


def affected(session: Session, items: list[ReorgItem], now: dt.datetime) -> list[Affected]:
    """Every valid certificate of every affected subscriber, with its decision. A subscriber
    touched by several items is decided once: a revoke wins over a change."""
    decided: dict[int, tuple[int, str, str, int | None]] = {}
    for item in items:
        subs, seals, target = item_decisions(session, item)
        for sid in subs:
            action = seals.get(sid, "change")
            prev = decided.get(sid)
            if prev is None or (prev[1] == "change" and action == "revoke"):
                decided[sid] = (item.id if prev is None else prev[0], action,
                                ABSORBED_REASON if action == "revoke" else CHANGE_REASON,
                                target if prev is None else prev[3])
    if not decided:
        return []
    out: list[Affected] = []
    ids = sorted(decided)
    for chunk in range(0, len(ids), 900):
        part = ids[chunk:chunk + 900]
        rows = session.execute(select(Certificate.serial, Certificate.subscriber_id,
                                      Certificate.profile, Subscriber.kind)
                               .join(Subscriber, Subscriber.id == Certificate.subscriber_id)
                               .where(Certificate.subscriber_id.in_(part),
                                      Certificate.state == "issued",
                                      Certificate.revoked_at.is_(None),
                                      Certificate.not_after > now)
                               .order_by(Certificate.subscriber_id, Certificate.id)).all()
        for serial, sid, profile, kind in rows:
            item_id, action, reason, target = decided[sid]
            out.append(Affected(item_id=item_id, subscriber_id=sid, subscriber_kind=kind,
                                serial=serial, profile=profile, action=action, reason=reason,
                                target_domain_id=target))
    return out


def subscribers_affected(session: Session, items: list[ReorgItem]) -> int:
    ids: set[int] = set()
    for item in items:
        ids |= item_decisions(session, item)[0]
    return len(ids)


def domain_names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(RaDomain.id, RaDomain.name)).all())


def target_label(session: Session, item: ReorgItem, names: dict[int, str]) -> str:
    if item.kind == "merge_province":
        return names.get(item.target_id) if item.target_id else f"{item.target_name} (mới)"
    if item.kind == "absorb_unit":
        org = session.get(Organization, item.target_id)
        return org.name if org else str(item.target_id)
    return item.target_name or "?"
