"""Subject DNs built from registered data, never copied from the CSR."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from ca.errors import InvalidInput
from ca.names import SubjectData
from ca.store.models import Organization, Subscriber


def organization_chain(session: Session, org: Organization) -> list[Organization]:
    """Top-down list of organisations from the domain's top agency to `org`."""
    chain: list[Organization] = []
    seen: set[int] = set()
    node: Organization | None = org
    while node is not None:
        if node.id in seen:
            raise InvalidInput("the organisation tree has a cycle", field="organization_id")
        seen.add(node.id)
        chain.append(node)
        node = session.get(Organization, node.parent_id) if node.parent_id else None
    return list(reversed(chain))


def subject_for(session: Session, subscriber: Subscriber) -> SubjectData:
    """C=VN, L=<province>, O=<direct managing agency>, OU=<unit(s)>, CN=<name>; for an
    organisation seal: CN=<agency>, O=<parent body>, L, C."""
    org = session.get(Organization, subscriber.organization_id)
    if org is None:
        raise InvalidInput("the subscriber's organisation does not exist", field="organization_id")
    chain = organization_chain(session, org)
    locality = subscriber.domain.locality if subscriber.domain else None
    return subject_from_chain(subscriber.kind, subscriber.full_name, locality, chain)


def chain_from(orgs: Mapping[int, Any], org_id: int) -> list:
    """`organization_chain` over rows already read (id -> row with id, parent_id, kind, name):
    top-down, the same cycle check; InvalidInput if the subscriber's organisation is missing."""
    org = orgs.get(org_id)
    if org is None:
        raise InvalidInput("the subscriber's organisation does not exist", field="organization_id")
    chain: list = []
    seen: set[int] = set()
    node = org
    while node is not None:
        if node.id in seen:
            raise InvalidInput("the organisation tree has a cycle", field="organization_id")
        seen.add(node.id)
        chain.append(node)
        node = orgs.get(node.parent_id) if node.parent_id else None
    return list(reversed(chain))


def subject_from_chain(kind: str, full_name: str, locality: str | None,
                       chain: Sequence[Any]) -> SubjectData:
    """The subject of a subscriber of `kind` from its top-down organisation chain (rows or ORM
    objects with .name and .kind): one rule for `subject_for` and batched issuance."""
    if kind == "organization":
        parent = chain[-2].name if len(chain) > 1 else None
        return SubjectData(common_name=full_name, locality=locality, organization=parent)
    agency_index = max((i for i, o in enumerate(chain) if o.kind == "agency"), default=None)
    if agency_index is None:
        organization, units = None, [o.name for o in chain]
    else:
        organization = chain[agency_index].name
        units = [o.name for o in chain[agency_index + 1:]]
    return SubjectData(common_name=full_name, locality=locality,
                       organization=organization, organizational_units=tuple(units))
