"""Versioned organisations: rename, move and merge create new versions; history lists them."""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.errors import InvalidInput, NotFound
from ca.names import clean_text
from ca.ra.roles import Caller
from ca.ra.scope import Scope, subtree_ids
from ca.ra.subscribers import require_active_domain
from ca.registry import add_organization
from ca.store.models import Organization, RaDomain
from ca.store.models_org import OrganizationVersion, add_first_version, current_version

MAX_AGENCY_LEVEL = 4
MAX_MERGE_SOURCES = 50


def _reason(reason: Any) -> str:
    return clean_text(reason, field_name="reason", max_chars=500)


def _name(name: Any) -> str:
    return clean_text(name, field_name="name", max_chars=200)


def _writable(session: Session, caller: Caller, org_id: Any, field: str = "organization_id"
              ) -> Organization:
    """The organisation if it is in the caller's scope (else NotFound) and the caller may edit."""
    if isinstance(org_id, bool) or not isinstance(org_id, int):
        raise InvalidInput(f"{field} must be a positive integer", field=field, code="wrong_type")
    org = Scope(session, caller).organization(org_id)
    caller.require("subscriber.write")
    require_active_domain(session, caller)
    return org


def _new_version(session: Session, org: Organization, *, at: dt.datetime, actor: str,
                 reason: str, merged_into_id: int | None = None) -> OrganizationVersion:
    """Close the current version and record the organisation's present values as the next."""
    cur = current_version(session, org.id)
    if cur is None:  # a row from before versions: its creation becomes version 1
        cur = add_first_version(session, org, at=at)
    cur.valid_to = at
    ver = OrganizationVersion(organization_id=org.id, version=cur.version + 1, name=org.name,
                              parent_id=org.parent_id, kind=org.kind, active=org.active,
                              merged_into_id=merged_into_id, valid_from=at,
                              valid_to=at if not org.active else None, created_by=actor,
                              reason=reason)
    session.add(ver)
    session.flush()
    return ver


def version_dict(v: OrganizationVersion) -> dict[str, Any]:
    iso = lambda t: t.isoformat() if t else None  # noqa: E731
    return {"version": v.version, "name": v.name, "parent_id": v.parent_id, "kind": v.kind,
            "active": v.active, "merged_into_id": v.merged_into_id,
            "valid_from": iso(v.valid_from), "valid_to": iso(v.valid_to),
            "created_by": v.created_by, "reason": v.reason}


def history(session: Session, caller: Caller, org_id: int) -> list[OrganizationVersion]:
    """Every version of an organisation in the caller's scope, oldest first."""
    org = Scope(session, caller).organization(org_id)
    rows = session.execute(select(OrganizationVersion).where(
        OrganizationVersion.organization_id == org.id)
        .order_by(OrganizationVersion.version)).scalars().all()
    return list(rows)


def version_number(session: Session, org_id: int) -> int:
    cur = current_version(session, org_id)
    return cur.version if cur is not None else 1


def rename(session: Session, caller: Caller, org_id: Any, new_name: Any, reason: Any, *,
           clock: Clock) -> OrganizationVersion:
    org = _writable(session, caller, org_id)
    name, why = _name(new_name), _reason(reason)
    if not org.active:
        raise InvalidInput("the organisation is no longer active (merged or closed)",
                           field="organization_id", code="inactive_organization")
    if name == org.name:
        raise InvalidInput("the new name is the current name", field="name", code="no_change")
    now, old = clock.now(), org.name
    org.name = name
    ver = _new_version(session, org, at=now, actor=caller.actor, reason=why)
    audit.record(session, "organization.rename", actor=caller.actor, at=now,
                 target=f"organization:{org.id}", domain_id=org.domain_id,
                 details={"from": old, "to": name, "version": ver.version, "reason": why})
    return ver


def _set_parent(session: Session, org: Organization, parent: Organization | None) -> None:
    """Re-parent `org` and fix the levels below it; refuses cycles and too-deep agencies."""
    below = subtree_ids(session, org.id)
    if parent is not None and parent.id in below:
        raise InvalidInput("an organisation cannot be moved under itself or one of its own "
                           "units (cycle)", field="parent_id", code="cycle")
    if parent is not None and parent.domain_id != org.domain_id:
        raise InvalidInput("the new parent must be in the same RA domain", field="parent_id",
                           code="cross_domain")
    shift = ((parent.level + 1) if parent is not None else 1) - org.level
    nodes = session.execute(select(Organization).where(Organization.id.in_(below))) \
        .scalars().all()
    if any(n.kind == "agency" and n.level + shift > MAX_AGENCY_LEVEL for n in nodes):
        raise InvalidInput(f"agencies nest at most {MAX_AGENCY_LEVEL} levels deep",
                           field="parent_id", code="too_deep")
    for n in nodes:
        n.level += shift
    org.parent_id = parent.id if parent is not None else None


def move(session: Session, caller: Caller, org_id: Any, new_parent_id: Any, reason: Any, *,
         clock: Clock) -> OrganizationVersion:
    """Give an organisation a new parent (None: top of its domain) inside the same domain."""
    org = _writable(session, caller, org_id)
    why = _reason(reason)
    parent = None
    if new_parent_id is not None:
        try:
            parent = _writable(session, caller, new_parent_id, "parent_id")
        except NotFound:
            raise InvalidInput(f"unknown organisation {new_parent_id}", field="parent_id",
                               code="unknown_organization") from None
        if not parent.active:
            raise InvalidInput("the new parent is no longer active", field="parent_id",
                               code="inactive_organization")
    if (parent.id if parent else None) == org.parent_id:
        raise InvalidInput("the organisation already has this parent", field="parent_id",
                           code="no_change")
    now, old = clock.now(), org.parent_id
    _set_parent(session, org, parent)
    ver = _new_version(session, org, at=now, actor=caller.actor, reason=why)
    audit.record(session, "organization.move", actor=caller.actor, at=now,
                 target=f"organization:{org.id}", domain_id=org.domain_id,
                 details={"from": old, "to": org.parent_id, "version": ver.version,
                          "reason": why})
    return ver


def merge(session: Session, caller: Caller, source_ids: Iterable[Any], *, reason: Any,
          clock: Clock, into_id: Any = None, new_name: Any = None,
          parent_id: Any = None) -> Organization:
    """Merge `source_ids` into an existing organisation (`into_id`) or a new one (`new_name`,
    under `parent_id` or the first source's parent). Sources become inactive with a closing
    version pointing at the result; their units move under it."""
    ids = list(source_ids) if not isinstance(source_ids, (str, bytes)) else None
    if not ids or len(ids) > MAX_MERGE_SOURCES:
        raise InvalidInput(f"give 1 to {MAX_MERGE_SOURCES} organisations to merge",
                           field="source_ids")
    if (into_id is None) == (new_name is None):
        raise InvalidInput("give either the organisation to merge into or a new name",
                           field="into_id", code="required")
    why = _reason(reason)
    sources = [_writable(session, caller, i, "source_ids") for i in ids]
    if len({s.id for s in sources}) != len(sources):
        raise InvalidInput("an organisation is listed twice", field="source_ids")
    domain_id = sources[0].domain_id
    if any(s.domain_id != domain_id for s in sources):
        raise InvalidInput("organisations of different RA domains cannot be merged",
                           field="source_ids", code="cross_domain")
    if any(not s.active for s in sources):
        raise InvalidInput("an organisation to merge is no longer active", field="source_ids",
                           code="inactive_organization")
    now = clock.now()
    if into_id is not None:
        target = _writable(session, caller, into_id, "into_id")
        if not target.active or target.domain_id != domain_id:
            raise InvalidInput("merge into an active organisation of the same RA domain",
                               field="into_id")
        inside = set().union(*(subtree_ids(session, s.id) for s in sources))
        if target.id in inside:
            raise InvalidInput("cannot merge an organisation into itself or one of its own "
                               "units (cycle)", field="into_id", code="cycle")
    else:
        parent = sources[0].parent
        if parent_id is not None:
            parent = _writable(session, caller, parent_id, "parent_id")
        if parent is not None and parent.id in set().union(
                *(subtree_ids(session, s.id) for s in sources)):
            raise InvalidInput("the new organisation cannot sit under one being merged "
                               "(cycle)", field="parent_id", code="cycle")
        target = add_organization(session, domain=session.get(RaDomain, domain_id),
                                  name=_name(new_name), kind=sources[0].kind, parent=parent,
                                  at=now)
        current_version(session, target.id).created_by = caller.actor
    for src in sources:
        children = session.execute(select(Organization).where(
            Organization.parent_id == src.id, Organization.active.is_(True))).scalars().all()
        for child in children:
            _set_parent(session, child, target)
            _new_version(session, child, at=now, actor=caller.actor,
                         reason=f"merged parent {src.id} into {target.id}: {why}")
        src.active = False
        _new_version(session, src, at=now, actor=caller.actor, reason=why,
                     merged_into_id=target.id)
    audit.record(session, "organization.merge", actor=caller.actor, at=now,
                 target=f"organization:{target.id}", domain_id=domain_id,
                 details={"sources": [s.id for s in sources], "into": target.id,
                          "created": into_id is None, "reason": why})
    return target


# --- used by reorganisation plans (ca.reorg.structure); additive --------------------------------
def reparent(session: Session, org: Organization, parent: Organization | None) -> None:
    """Public form of the re-parenting rule (cycles refused, levels fixed below)."""
    _set_parent(session, org, parent)


def record_version(session: Session, org: Organization, *, at: dt.datetime, actor: str,
                   reason: str, merged_into_id: int | None = None) -> OrganizationVersion:
    """Close the current version and record the organisation's present values as the next."""
    return _new_version(session, org, at=at, actor=actor, reason=reason,
                        merged_into_id=merged_into_id)
