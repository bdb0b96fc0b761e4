"""Transfer fixtures: API clients and page logins (shared with tests/ra and tests/web), extra
officers of a third province and of the destination, and helpers to count rows and events."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from ca.ra.roles import Caller
from ca.ra.users import create_user
from ca.store.models import AuditEvent, Subscriber
from tests.ra.conftest import api_as, caller_of, token_for  # noqa: F401  (shared fixtures)
from tests.web.conftest import app, login_as  # noqa: F401  (shared fixtures)


@pytest.fixture
def officers(db, clock):
    """ra.hanoi.2 (a second Hà Nội officer), ra.haiphong (a third province) and
    ra.quangninh.2 (a second Quảng Ninh officer)."""
    with db.transaction() as s:
        for name, dom in (("ra.hanoi.2", "hanoi"), ("ra.haiphong", "haiphong"),
                          ("ra.quangninh.2", "quangninh")):
            create_user(s, Caller.system("test"), username=name, role="ra_officer",
                        at=clock.now(), domain_code=dom)
    return ("ra.hanoi.2", "ra.haiphong", "ra.quangninh.2")


def count(db, model, *where) -> int:
    with db.transaction() as s:
        return s.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def events(db, action: str, target: str | None = None) -> list[AuditEvent]:
    with db.transaction() as s:
        stmt = select(AuditEvent).where(AuditEvent.action == action)
        if target is not None:
            stmt = stmt.where(AuditEvent.target == target)
        return list(s.execute(stmt.order_by(AuditEvent.seq)).scalars())


def state(db):
    """Everything a failed action must leave untouched."""
    from ca.store.models_ra import RaRequest
    from ca.store.models_transfer import SubscriberCustody, SubscriberTransfer
    with db.transaction() as s:
        subs = tuple(s.execute(select(Subscriber.id, Subscriber.domain_id,
                                      Subscriber.organization_id).order_by(Subscriber.id)).all())
        trs = tuple(s.execute(select(SubscriberTransfer.id, SubscriberTransfer.state)
                              .order_by(SubscriberTransfer.id)).all())
        n = lambda m: s.execute(select(func.count()).select_from(m)).scalar_one()  # noqa: E731
        return (subs, trs, n(RaRequest), n(SubscriberCustody), n(AuditEvent))
