"""The caller's delegation as query filters: every RA read goes through a Scope.

An object outside the scope is reported exactly like a missing one (same NotFound message)."""
from __future__ import annotations

from sqlalchemy import ColumnElement, false, select, true
from sqlalchemy.orm import Session

from ca import serial as serials
from ca.errors import NotFound, PermissionDenied
from ca.ra.roles import Caller
from ca.store.models import Certificate, Organization, RaDomain, Subscriber
from ca.store.models_ra import RaRequest


def subtree_ids(session: Session, root_id: int) -> frozenset[int]:
    """The organisation and every organisation below it."""
    root = session.get(Organization, root_id)
    if root is None:
        return frozenset()
    rows = session.execute(select(Organization.id, Organization.parent_id).where(
        Organization.domain_id == root.domain_id)).all()
    children: dict[int | None, list[int]] = {}
    for oid, parent in rows:
        children.setdefault(parent, []).append(oid)
    out, todo = set(), [root_id]
    while todo:
        node = todo.pop()
        if node in out:
            continue
        out.add(node)
        todo.extend(children.get(node, ()))
    return frozenset(out)


def _fits(value: int) -> bool:
    """Ids are 32-bit on every backend; a larger number names nothing (PostgreSQL would
    refuse the comparison)."""
    return isinstance(value, int) and 0 < value < 2**31


class Scope:
    """What `caller` may see: everything (central roles), one domain (optionally one subtree of
    organisations), or only the caller's own subscriber record."""

    def __init__(self, session: Session, caller: Caller) -> None:
        self.session, self.caller = session, caller
        self.everything = caller.is_central
        self.domain_id = caller.domain_id
        self.self_only = not caller.can("read")
        self.org_ids: frozenset[int] | None = None
        if not self.everything and not self.self_only:
            if self.domain_id is None:
                raise PermissionDenied("this account has no delegation", code="no_delegation")
            if caller.organization_id is not None:
                self.org_ids = subtree_ids(session, caller.organization_id)

    # -- clauses ------------------------------------------------------------------------------
    def domains(self) -> ColumnElement[bool]:
        if self.everything:
            return true()
        if self.self_only:
            sub = self.session.get(Subscriber, self.caller.subscriber_id or 0)
            return RaDomain.id == sub.domain_id if sub else false()
        return RaDomain.id == self.domain_id

    def organizations(self) -> ColumnElement[bool]:
        if self.everything:
            return true()
        if self.self_only:
            sub = self.session.get(Subscriber, self.caller.subscriber_id or 0)
            return Organization.id == sub.organization_id if sub else false()
        clause = Organization.domain_id == self.domain_id
        if self.org_ids is not None:
            clause = clause & Organization.id.in_(self.org_ids)
        return clause

    def subscribers(self) -> ColumnElement[bool]:
        if self.everything:
            return true()
        if self.self_only:
            return Subscriber.id == (self.caller.subscriber_id or -1)
        clause = Subscriber.domain_id == self.domain_id
        if self.org_ids is not None:
            clause = clause & Subscriber.organization_id.in_(self.org_ids)
        return clause

    def _subscriber_ids(self):
        return select(Subscriber.id).where(self.subscribers()).scalar_subquery()

    def requests(self) -> ColumnElement[bool]:
        if self.everything:
            return true()
        if self.self_only:
            return RaRequest.subscriber_id == (self.caller.subscriber_id or -1)
        return (RaRequest.domain_id == self.domain_id) & RaRequest.subscriber_id.in_(
            self._subscriber_ids())

    def certificates(self) -> ColumnElement[bool]:
        """Released certificates only; a domain sees its subscribers' certificates."""
        clause = Certificate.state == "issued"
        if self.everything:
            return clause
        if self.self_only:
            return clause & (Certificate.subscriber_id == (self.caller.subscriber_id or -1))
        return clause & Certificate.subscriber_id.in_(self._subscriber_ids())

    # -- single objects: missing and out-of-scope are the same answer -------------------------
    def organization(self, org_id: int) -> Organization:
        org = self.session.execute(select(Organization).where(
            Organization.id == org_id, self.organizations())).scalar_one_or_none() \
            if _fits(org_id) else None
        if org is None:
            raise NotFound(f"no organisation with id {org_id}", field="organization_id")
        return org

    def subscriber(self, subscriber_id: int) -> Subscriber:
        sub = self.session.execute(select(Subscriber).where(
            Subscriber.id == subscriber_id, self.subscribers())).scalar_one_or_none() \
            if _fits(subscriber_id) else None
        if sub is None:
            raise NotFound(f"no subscriber with id {subscriber_id}", field="subscriber_id")
        return sub

    def request(self, request_id: int) -> RaRequest:
        q = select(RaRequest).where(RaRequest.id == request_id, self.requests())
        row = self.session.execute(q).scalar_one_or_none() if _fits(request_id) else None
        if row is None:
            raise NotFound(f"no request with id {request_id}", field="request_id")
        return row

    def certificate(self, serial: str) -> Certificate:
        try:
            hexserial = serials.to_hex(serials.parse(serial))
        except ValueError:
            raise NotFound(f"no certificate with serial {serial[:48]!r}", field="serial") from None
        rows = self.session.execute(select(Certificate).where(
            Certificate.serial == hexserial, self.certificates())).scalars().all()
        if len(rows) != 1:
            raise NotFound(f"no certificate with serial {hexserial}", field="serial")
        return rows[0]
