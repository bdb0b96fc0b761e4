"""What each RA domain may request: subscriber profiles and device types (default: all)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.errors import InvalidInput, NotFound, PermissionDenied, PolicyViolation
from ca.profiles.model import Profile
from ca.ra.roles import Caller
from ca.registry import DEVICE_TYPES
from ca.store.models import RaDomain, Subscriber
from ca.store.models_org import DomainAllowance


def subscriber_profiles(profiles: dict[str, Profile]) -> list[str]:
    """The profiles an RA may request (the same test as ca.ra.requests.create)."""
    return [n for n, p in profiles.items() if p.category == "subscriber" and not p.dns_in_san]


@dataclass(frozen=True)
class Allowance:
    domain_id: int
    profiles: tuple[str, ...]
    device_types: tuple[str, ...]
    explicit: bool  # False: no row, the defaults apply


def get(session: Session, domain_id: int, profiles: dict[str, Profile]) -> Allowance:
    row = session.get(DomainAllowance, domain_id)
    if row is None:
        return Allowance(domain_id, tuple(subscriber_profiles(profiles)), DEVICE_TYPES, False)
    return Allowance(domain_id, tuple(row.profiles), tuple(row.device_types), True)


def check(session: Session, sub: Subscriber, profile_name: str | None,
          profiles: dict[str, Profile]) -> None:
    """PolicyViolation when the subscriber's domain may not request this profile or device."""
    allow = get(session, sub.domain_id, profiles)
    if profile_name is not None and profile_name not in allow.profiles:
        raise PolicyViolation(
            f"the RA domain may not request profile {profile_name!r}; allowed: "
            f"{', '.join(allow.profiles) or 'none'}", field="profile", code="profile_not_allowed")
    if sub.device_type not in allow.device_types:
        raise PolicyViolation(
            f"the RA domain may not request certificates on device type {sub.device_type}; "
            f"allowed: {', '.join(allow.device_types) or 'none'}", field="device_type",
            code="device_type_not_allowed")


def _pick(values: Any, known: Iterable[str], field: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise InvalidInput(f"{field} must be a list", field=field, code="wrong_type")
    known = list(known)
    out = []
    for v in values:
        if not isinstance(v, str) or v not in known:
            raise InvalidInput(f"unknown {field[:-1].replace('_', ' ')} {str(v)[:40]!r}",
                               field=field, code="unknown_value")
        if v not in out:
            out.append(v)
    return [k for k in known if k in out]  # canonical order


def set_allowance(session: Session, clock: Clock, caller: Caller, domain_id: int,
                  profile_names: Any, device_types: Any,
                  profiles: dict[str, Profile]) -> Allowance:
    """Central operators only; audited with the old and new lists."""
    if caller.role != "central_operator":
        raise PermissionDenied("only a central operator may change what a domain may request",
                               code="forbidden")
    dom = session.get(RaDomain, domain_id) if isinstance(domain_id, int) else None
    if dom is None:
        raise NotFound(f"no RA domain with id {domain_id}", field="domain_id")
    new_p = _pick(profile_names, subscriber_profiles(profiles), "profiles")
    new_d = _pick(device_types, DEVICE_TYPES, "device_types")
    old = get(session, dom.id, profiles)
    now = clock.now()
    row = session.get(DomainAllowance, dom.id)
    if row is None:
        row = DomainAllowance(domain_id=dom.id, profiles=new_p, device_types=new_d,
                              updated_at=now, updated_by=caller.actor)
        session.add(row)
    else:
        row.profiles, row.device_types = new_p, new_d
        row.updated_at, row.updated_by = now, caller.actor
    session.flush()
    audit.record(session, "domain.allowance", actor=caller.actor, at=now,
                 target=f"domain:{dom.code}", domain_id=dom.id,
                 details={"profiles": {"from": list(old.profiles), "to": new_p},
                          "device_types": {"from": list(old.device_types), "to": new_d}})
    return get(session, dom.id, profiles)
