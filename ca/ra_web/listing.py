"""Scoped lists for the pages: sortable subscriber search, certificates, history, counts."""
from __future__ import annotations

import datetime as dt
import unicodedata

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from ca.errors import InvalidInput
from ca.ra.roles import Caller
from ca.ra.scope import Scope
from ca.ra.subscribers import MAX_PAGE, Page, search_text
from ca.store.models import AuditEvent, Certificate, Organization, Subscriber
from ca.store.models_ra import RaRequest

SORTS = {"name": (Subscriber.search_name,), "id_number": (Subscriber.id_number,),
         "organization": (Organization.name,), "created": (Subscriber.created_at,),
         "email": (Subscriber.email,)}


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def subscribers(session: Session, caller: Caller, *, q: str | None = None, sort: str = "name",
                descending: bool = False, page: int = 1, per_page: int = 25) -> Page:
    """Subscribers in scope; `q` matches the name with or without diacritics, the ID number or
    the e-mail."""
    if sort not in SORTS:
        raise InvalidInput(f"sort is one of {', '.join(SORTS)}", field="sort")
    if page < 1 or not 1 <= per_page <= MAX_PAGE:
        raise InvalidInput("page out of range", field="page")
    scope = Scope(session, caller)
    stmt = select(Subscriber).join(Organization, Subscriber.organization_id == Organization.id) \
        .where(scope.subscribers())
    # Control characters never match a stored name (and PostgreSQL refuses NUL in text).
    term = search_text("".join(c for c in (q or "") if unicodedata.category(c)[0] != "C"))
    if term:
        like = _like(term)
        stmt = stmt.where(or_(Subscriber.search_name.like(like, escape="\\"),
                              Subscriber.id_number.like(_like(term.upper()), escape="\\"),
                              func.lower(Subscriber.email).like(like, escape="\\")))
    total = session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    cols = [c.desc() if descending else c.asc() for c in SORTS[sort]]
    items = session.execute(stmt.order_by(*cols, Subscriber.id).limit(per_page)
                            .offset((page - 1) * per_page)).scalars().all()
    return Page(items=list(items), page=page, per_page=per_page, total=total)


def certificates_of(session: Session, caller: Caller, subscriber_id: int) -> list[Certificate]:
    scope = Scope(session, caller)
    return list(session.execute(select(Certificate).where(
        scope.certificates(), Certificate.subscriber_id == subscriber_id)
        .order_by(Certificate.issued_at.desc(), Certificate.id.desc())).scalars())


def my_certificates(session: Session, caller: Caller) -> list[Certificate]:
    scope = Scope(session, caller)
    return list(session.execute(select(Certificate).where(scope.certificates(),
                Certificate.subscriber_id == (caller.subscriber_id or -1))
                .order_by(Certificate.id.desc())).scalars())


def history(session: Session, caller: Caller, subscriber_id: int, limit: int = 200) -> list:
    """Audit events about the subscriber and its requests (the subscriber must be in scope)."""
    Scope(session, caller).subscriber(subscriber_id)
    req_ids = session.execute(select(RaRequest.id).where(
        RaRequest.subscriber_id == subscriber_id)).scalars().all()
    targets = [f"subscriber:{subscriber_id}"] + [f"request:{i}" for i in req_ids]
    return list(session.execute(select(AuditEvent).where(AuditEvent.target.in_(targets))
                                .order_by(AuditEvent.seq.desc()).limit(limit)).scalars())


def status_of(cert: Certificate, now: dt.datetime) -> str:
    if cert.revoked_at is not None:
        return "revoked"
    return "expired" if cert.not_after <= now else "valid"


def counts(session: Session, caller: Caller, now: dt.datetime) -> dict[str, int]:
    scope = Scope(session, caller)
    n = lambda stmt: session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()  # noqa: E731
    reqs = select(RaRequest.id).where(scope.requests())
    return {
        "subscribers": n(select(Subscriber.id).where(scope.subscribers())),
        "submitted": n(reqs.where(RaRequest.state == "submitted")),
        "overdue": n(reqs.where(RaRequest.state.in_(("submitted", "approved")),
                                RaRequest.due_at < now)),
        "certificates": n(select(Certificate.id).where(scope.certificates(),
                                                       Certificate.revoked_at.is_(None),
                                                       Certificate.not_after > now)),
    }


def previous_csr(session: Session, caller: Caller, serial: str) -> str | None:
    """The CSR that produced the certificate (a renewal with the same key), within scope."""
    return session.execute(select(RaRequest.csr_pem).where(
        Scope(session, caller).requests(), RaRequest.certificate_serial == serial)
        .order_by(RaRequest.id.desc())).scalars().first()
