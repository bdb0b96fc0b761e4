"""Subject DNs built from registered data, never copied from the CSR."""
from __future__ import annotations

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
    if subscriber.kind == "organization":
        parent = chain[-2].name if len(chain) > 1 else None
        return SubjectData(common_name=subscriber.full_name, locality=locality,
                           organization=parent)
    agency_index = max((i for i, o in enumerate(chain) if o.kind == "agency"), default=None)
    if agency_index is None:
        organization, units = None, [o.name for o in chain]
    else:
        organization = chain[agency_index].name
        units = [o.name for o in chain[agency_index + 1:]]
    return SubjectData(common_name=subscriber.full_name, locality=locality,
                       organization=organization, organizational_units=tuple(units))
