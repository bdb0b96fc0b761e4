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
from ca.store.models_transfer import SubscriberCustody

OPEN_STATES = ("draft", "submitted", "approved")


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
        # The domain that has the person now also reads the closed requests handled by a former
        # domain (the full history, docs/transfers.md); open ones move with the person.
        return ((RaRequest.domain_id == self.domain_id) | RaRequest.state.notin_(OPEN_STATES)) \
            & RaRequest.subscriber_id.in_(self._subscriber_ids())

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

    def subscribers_by_id(self, ids) -> dict[int, Subscriber]:
        """The subscribers among `ids` that are in scope, in one query (a batch's look-ups);
        an id that is missing or out of scope is simply absent, for subscriber() to refuse."""
        wanted = sorted({i for i in ids if type(i) is int and _fits(i)})
        if not wanted:
            return {}
        return {sub.id: sub for sub in self.session.execute(select(Subscriber).where(
            Subscriber.id.in_(wanted), self.subscribers())).scalars()}

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

    # -- custody (transfers): a former domain reads what happened while the person was theirs --
    def custody_periods(self, subscriber_id: int) -> list[tuple]:
        """The periods [from, to) during which the caller's domain (and organisation subtree,
        if the caller is limited to one) had the subscriber, closed periods only."""
        if self.everything or self.self_only or not _fits(subscriber_id):
            return []
        rows = self.session.execute(select(SubscriberCustody).where(
            SubscriberCustody.subscriber_id == subscriber_id,
            SubscriberCustody.domain_id == self.domain_id,
            SubscriberCustody.valid_to.is_not(None)).order_by(SubscriberCustody.valid_from)
        ).scalars().all()
        return [(r.valid_from, r.valid_to) for r in rows
                if self.org_ids is None or r.organization_id in self.org_ids]

    def subscriber_history(self, subscriber_id: int) -> tuple[Subscriber, list[tuple] | None]:
        """The subscriber whose history the caller may read, and the periods it may read (None:
        all of it, because the person is in scope now). A domain that had the person before
        reads its own periods only; anyone else gets the NotFound of a missing subscriber."""
        try:
            return self.subscriber(subscriber_id), None
        except NotFound:
            periods = self.custody_periods(subscriber_id)
            sub = self.session.get(Subscriber, subscriber_id) if periods else None
            if sub is None:
                raise
            return sub, periods


def within(periods: list[tuple] | None, at) -> bool:
    """Whether `at` falls in one of the periods (None: no limit)."""
    if periods is None:
        return True
    if at is None:
        return False
    return any(start <= at and (end is None or at < end) for start, end in periods)
