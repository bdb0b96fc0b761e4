"""Certificate service requests: create, submit, reject, list (approval is in approval.py).

States: draft -> submitted -> approved | rejected; approved -> issued | done | failed.
Every transition is a conditional UPDATE on the state and is audited with who and when."""
from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.csr import check_csr_key, csr_to_pem, parse_csr
from ca.errors import CAError, Conflict, InvalidInput, NotFound, PermissionDenied, PolicyViolation
from ca.profiles.model import Profile
from ca.ra import allowances  # per-domain allowances
from ca.ra import notify  # e-mail notices (outbox)
from ca.ra.roles import Caller
from ca.ra.scope import Scope
from ca.ra.subscribers import MAX_PAGE, Page, require_active_domain
from ca.ra.workdays import WorkingCalendar
from ca.revocation import parse_reason
from ca.store.database import next_ids
from ca.store.models import Certificate
from ca.store.models_ra import REQUEST_STATES, REQUEST_TYPES, RaRequest

FIELDS = {"type", "subscriber_id", "profile", "csr_pem", "serial", "reason", "validity_days",
          "submit", "device_id"}  # device_id: restore (issue 6)
OPEN_STATES = ("draft", "submitted", "approved")
RENEW_MAX_DAYS = 3 * 365  # DOMAIN.md: a renewal extends validity by at most 3 years
CHANGE_REASONS = ("superseded", "affiliationChanged")
SELF_SERVICE_TYPES = ("renew", "revoke", "restore")
DEFAULT_PROFILE = {"person": "personal", "organization": "organization"}


def _str(body: dict, name: str, max_len: int = 64) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name, code="wrong_type")
    if len(value) > max_len:
        raise InvalidInput(f"{name} is too long", field=name, code="too_long")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{name} is not valid text", field=name, code="invalid_text") from None
    return value.strip()


def _int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise InvalidInput(f"{name} must be a positive integer", field=name, code="wrong_type")
    return value


def _target(scope: Scope, serial: str | None, subscriber_id: int, now: dt.datetime) -> Certificate:
    if not serial:
        raise InvalidInput("serial (the certificate concerned) is required", field="serial",
                           code="required")
    try:
        cert = scope.certificate(serial)
    except NotFound:
        raise InvalidInput(f"unknown certificate {serial[:48]!r}", field="serial",
                           code="unknown_certificate") from None
    if cert.subscriber_id != subscriber_id:
        raise InvalidInput("the certificate does not belong to this subscriber", field="serial",
                           code="unknown_certificate")
    if cert.revoked_at is not None:
        raise Conflict("the certificate is already revoked", field="serial",
                       code="already_revoked")
    if cert.not_after <= now:
        raise PolicyViolation("the certificate has expired", field="serial", code="expired")
    return cert


def create(session: Session, clock: Clock, caller: Caller, body: Any,
           profiles: dict[str, Profile]) -> RaRequest:
    """Validate and store a request; submitted at once unless `submit` is false (draft).

    A request submitted at creation is written in the submitted state with ONE audit event,
    `request.create` with `"submitted": true` and its `due_at` (what `request.submit` said),
    and its notices."""
    return store(session, clock, caller, [prepare(session, clock, caller, body, profiles)])[0]


@dataclass
class Prepared:
    """A validated request, not yet written (prepare -> store)."""
    req: RaRequest
    device: Any
    details: dict


def prepare(session: Session, clock: Clock, caller: Caller, body: Any,
            profiles: dict[str, Profile], *, batch: dict | None = None) -> Prepared:
    """Every check of a new request; nothing is written (a refusal leaves nothing behind).
    `batch`: a dict shared by the items of one batch (POST /requests/batch): the caller's
    domain is checked once, subscribers and allowances are looked up once, and two items
    asking for the same open request on one certificate are refused like a stored one."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", code="invalid_body")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", field=unknown[0], code="unknown_field")
    kind = _str(body, "type", 16)
    if kind not in REQUEST_TYPES:
        raise InvalidInput(f"type is one of {', '.join(REQUEST_TYPES)}", field="type")
    sub_id = _int(body, "subscriber_id")
    if sub_id is None:
        raise InvalidInput("subscriber_id is required", field="subscriber_id", code="required")
    submit_now = body.get("submit", True)
    if not isinstance(submit_now, bool):
        raise InvalidInput("submit must be true or false", field="submit", code="wrong_type")
    scope = Scope(session, caller)
    cache = batch if batch is not None else {}
    sub = cache.get(("subscriber", sub_id))
    if sub is None:
        try:
            sub = cache[("subscriber", sub_id)] = scope.subscriber(sub_id)
        except NotFound:
            raise InvalidInput(f"unknown subscriber {sub_id}", field="subscriber_id",
                               code="unknown_subscriber") from None
    if not caller.can("request.create"):
        if not (caller.role == "subscriber" and kind in SELF_SERVICE_TYPES):
            caller.require("request.create")
    if "domain_active" not in cache:
        require_active_domain(session, caller)
        cache["domain_active"] = True
    now = clock.now()
    req = RaRequest(type=kind, state="draft", domain_id=sub.domain_id, subscriber_id=sub.id,
                    created_by=caller.username, created_at=now)
    csr_text = _str(body, "csr_pem", 64 * 1024)
    validity = _int(body, "validity_days")
    if kind in ("issue", "renew", "change"):
        target = _target(scope, _str(body, "serial", 64), sub.id, now) \
            if kind != "issue" else None
        name = target.profile if target else (_str(body, "profile", 32)
                                              or DEFAULT_PROFILE.get(sub.kind))
        if body.get("profile") is not None and target is not None and body["profile"] != name:
            raise InvalidInput("a renewal or change keeps the certificate's profile",
                               field="profile")
        profile = profiles.get(name or "")
        if profile is None or profile.category != "subscriber" or profile.dns_in_san:
            raise InvalidInput(f"profile must be one of the subscriber profiles: "
                               f"{', '.join(p for p, v in profiles.items() if v.category == 'subscriber' and not v.dns_in_san)}",
                               field="profile", code="unknown_profile")
        if profile.subject != sub.kind:
            raise PolicyViolation(f"profile {profile.name!r} is for {profile.subject} "
                                  f"subscribers", field="profile")
        # --- per-domain allowances (ca/ra/allowances.py) ---
        allowed = ("allowed", sub.domain_id, profile.name, sub.device_type)
        if allowed not in cache:
            allowances.check(session, sub, profile.name, profiles)
            cache[allowed] = True
        # --- end allowances ---
        # A change without a CSR keeps the holder's key: the target certificate's public key
        # is certified again (IssueRequest.reuse_key_serial) where the profile allows it.
        keep_key = (csr_text is None and kind == "change"
                    and getattr(profile, "reuse_key_on_change", False))
        if not csr_text and not keep_key:
            raise InvalidInput("csr_pem is required" + (
                f" (profile {profile.name!r} does not keep the key on a change)"
                if kind == "change" else ""), field="csr_pem", code="required")
        parsed = parse_csr(csr_text) if not keep_key else None
        if parsed is not None:
            check_csr_key(parsed, profile.key_types)
        cap = RENEW_MAX_DAYS if kind == "renew" else profile.max_validity_days
        if validity is not None and (kind == "change" or validity > cap):
            raise PolicyViolation(f"validity_days is at most {cap} for {kind}"
                                  if kind != "change" else
                                  "a change of information keeps the original expiry",
                                  field="validity_days")
        req.profile, req.validity_days = profile.name, validity
        req.csr_pem = csr_to_pem(parsed.der) if parsed is not None else None  # None: same key
        req.central_required = profile.central_approval
        if target is not None:
            req.target_serial = target.serial
        if kind == "change":
            reason = _str(body, "reason", 32) or "superseded"
            if reason not in CHANGE_REASONS:
                raise InvalidInput(f"a change revokes the old certificate as "
                                   f"{' or '.join(CHANGE_REASONS)}", field="reason")
            req.reason = reason
    elif kind == "revoke":
        target = _target(scope, _str(body, "serial", 64), sub.id, now)
        req.target_serial, req.profile = target.serial, target.profile
        req.reason = parse_reason(_str(body, "reason", 32))
        if caller.role == "subscriber" and req.reason != "keyCompromise":
            raise PermissionDenied("staff may only report a compromised or lost key "
                                   "(keyCompromise)", field="reason", code="forbidden")
    # --- restore (issue 6, ca.ra.restore): the key device must be the subscriber's, in scope ---
    device = None
    if kind == "restore":
        from ca.ra import restore as _restore
        if batch is not None:
            session.flush()  # its checks then see the batch's earlier (pending) items
        device = _restore.check_new(session, scope, body, sub.id)
    elif body.get("device_id") is not None:
        raise InvalidInput(f"device_id does not apply to a {kind} request", field="device_id")
    # --- end restore ---
    for name in ("csr_pem", "validity_days", "profile") if kind in ("revoke", "restore") else ():
        if body.get(name) is not None:
            raise InvalidInput(f"{name} does not apply to a {kind} request", field=name)
    if req.target_serial and (("open", kind, req.target_serial) in cache
                              or open_request_exists(session, kind, req.target_serial)):
        raise _duplicate(kind)
    if req.target_serial:
        cache[("open", kind, req.target_serial)] = True
    details = {"type": kind, "subscriber_id": sub.id, "profile": req.profile,
               "serial": req.target_serial, "reason": req.reason,
               **({"device_id": device.id} if device is not None else {})}
    if submit_now:  # created and submitted by the same person: one row write, one event
        req.state, req.submitted_by, req.submitted_at = "submitted", caller.username, now
        req.due_at = _calendar(session).due_at(kind, now)
        details.update(submitted=True, due_at=req.due_at.isoformat())
    return Prepared(req, device, details)


def open_request_exists(session: Session, kind: str, serial: str) -> bool:
    return session.execute(select(RaRequest.id).where(
        RaRequest.target_serial == serial, RaRequest.type == kind,
        RaRequest.state.in_(OPEN_STATES))).first() is not None


def _duplicate(kind: str) -> Conflict:
    return Conflict(f"an open {kind} request for this certificate exists already",
                    field="serial", code="duplicate_request")


def recheck(session: Session, item: Prepared) -> None:
    """What another creator may have changed since `item` was prepared in a read transaction
    (POST /requests/batch): an open request on the same certificate. Run in the writing
    transaction; raises the refusal prepare() would have raised."""
    if item.req.target_serial and open_request_exists(session, item.req.type,
                                                      item.req.target_serial):
        raise _duplicate(item.req.type)


def parse_csrs_ahead(bodies: list) -> None:
    """Parse the CSRs of a batch of request bodies before its transaction opens (CPU work that
    need not hold the SQLite writer's lock). parse_csr keeps what it parsed, so prepare() finds
    it; a refusal is raised again, in its place, by prepare()."""
    for body in bodies:
        with contextlib.suppress(CAError):
            text = _str(body, "csr_pem", 64 * 1024) if isinstance(body, dict) else None
            if text:
                parse_csr(text)


def store(session: Session, clock: Clock, caller: Caller, items: list[Prepared]
          ) -> list[RaRequest]:
    """Write prepared requests: one flush (one multi-row INSERT), their audit events with one
    record_many, their notices."""
    ids = next_ids(session, RaRequest.__table__, len(items))
    if ids is not None:  # SQLite: one executemany instead of one INSERT per request
        for p, rid in zip(items, ids):
            p.req.id = rid
    session.add_all([p.req for p in items])
    session.flush()
    for p in items:
        if p.device is not None:  # restore (issue 6)
            from ca.ra import restore as _restore
            _restore.attach(session, p.req, p.device)
    audit.record_many(session, [audit.Entry("request.create", caller.actor, p.req.created_at,
                                            f"request:{p.req.id}", p.req.domain_id, p.details)
                                for p in items])
    for p in items:
        if p.req.state == "submitted":
            notify.request_event(session, clock, p.req.id, "submitted")  # e-mail outbox
    return [p.req for p in items]


def _calendar(session: Session) -> WorkingCalendar:
    """The holiday calendar, read once per transaction (a batch creates many requests)."""
    cal = session.info.get("govca_calendar")
    if cal is None:
        cal = session.info["govca_calendar"] = WorkingCalendar.load(session)
    return cal


def _previous_csr(session: Session, cert: Certificate) -> str | None:
    """The CSR that produced `cert` (a change of information may keep the key)."""
    return session.execute(select(RaRequest.csr_pem).where(
        RaRequest.certificate_serial == cert.serial).order_by(RaRequest.id.desc())
    ).scalars().first()


def submit(session: Session, clock: Clock, caller: Caller, request_id: int) -> RaRequest:
    req = Scope(session, caller).request(request_id)
    if req.created_by != caller.username:
        caller.require("request.create")
    require_active_domain(session, caller)
    now = clock.now()
    due = WorkingCalendar.load(session).due_at(req.type, now)
    result = session.execute(update(RaRequest).where(
        RaRequest.id == req.id, RaRequest.state == "draft").values(
        state="submitted", submitted_by=caller.username, submitted_at=now, due_at=due))
    if result.rowcount != 1:
        raise Conflict(f"request {req.id} is {req.state}, not a draft", code="wrong_state")
    audit.record(session, "request.submit", actor=caller.actor, at=now,
                 target=f"request:{req.id}", domain_id=req.domain_id,
                 details={"due_at": due.isoformat()})
    session.refresh(req)
    notify.request_event(session, clock, req.id, "submitted")  # e-mail outbox (docs/notices.md)
    return req


def reject(session: Session, clock: Clock, caller: Caller, request_id: int, note: Any) -> RaRequest:
    req = Scope(session, caller).request(request_id)
    caller.require("request.approve")
    require_active_domain(session, caller)
    if note is not None and not isinstance(note, str):
        raise InvalidInput("reason must be a string", field="reason", code="wrong_type")
    note = (note or "").strip()[:1000] or None
    now = clock.now()
    result = session.execute(update(RaRequest).where(
        RaRequest.id == req.id, RaRequest.state == "submitted").values(
        state="rejected", decided_by=caller.username, decided_at=now, decision_note=note))
    if result.rowcount != 1:
        raise Conflict(f"request {req.id} is {req.state}; only a submitted request can be "
                       f"rejected", code="wrong_state")
    audit.record(session, "request.reject", actor=caller.actor, at=now,
                 target=f"request:{req.id}", domain_id=req.domain_id, details={"note": note})
    session.refresh(req)
    notify.request_event(session, clock, req.id, "rejected")  # e-mail outbox (docs/notices.md)
    return req


def list_requests(session: Session, caller: Caller, *, clock: Clock, state: str | None = None,
                  type: str | None = None, subscriber_id: int | None = None,
                  overdue: bool = False, needs_central: bool = False, page: int = 1,
                  per_page: int = 50) -> Page:
    if page < 1 or not 1 <= per_page <= MAX_PAGE:
        raise InvalidInput(f"page >= 1 and 1 <= per_page <= {MAX_PAGE}", field="per_page")
    stmt = select(RaRequest).where(Scope(session, caller).requests())
    if state is not None:
        if state not in REQUEST_STATES:
            raise InvalidInput(f"state is one of {', '.join(REQUEST_STATES)}", field="state")
        stmt = stmt.where(RaRequest.state == state)
    if type is not None:
        if type not in REQUEST_TYPES:
            raise InvalidInput(f"type is one of {', '.join(REQUEST_TYPES)}", field="type")
        stmt = stmt.where(RaRequest.type == type)
    if subscriber_id is not None:
        stmt = stmt.where(RaRequest.subscriber_id == subscriber_id)
    if overdue:
        stmt = stmt.where(RaRequest.state.in_(("submitted", "approved")),
                          RaRequest.due_at < clock.now())
    if needs_central:
        stmt = stmt.where(RaRequest.state == "submitted", RaRequest.central_required.is_(True),
                          RaRequest.central_approved_by.is_(None))
    total = session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    items = session.execute(stmt.order_by(RaRequest.id.desc()).limit(per_page)
                            .offset((page - 1) * per_page)).scalars().all()
    return Page(items=list(items), page=page, per_page=per_page, total=total)


def summary(req: RaRequest, now: dt.datetime) -> dict[str, Any]:
    """The request as plain data (API and pages)."""
    iso = lambda t: t.isoformat() if t else None  # noqa: E731
    return {
        "id": req.id, "type": req.type, "state": req.state,
        "certificate_serial": req.certificate_serial, "subscriber_id": req.subscriber_id,
        "profile": req.profile, "serial": req.target_serial, "reason": req.reason,
        "validity_days": req.validity_days, "central_approval_required": req.central_required,
        "created_by": req.created_by, "created_at": iso(req.created_at),
        "submitted_by": req.submitted_by, "submitted_at": iso(req.submitted_at),
        "due_at": iso(req.due_at),
        "overdue": bool(req.due_at and req.state in ("submitted", "approved")
                        and req.due_at < now),
        "approved_by": req.approved_by, "approved_at": iso(req.approved_at),
        "central_approved_by": req.central_approved_by,
        "central_approved_at": iso(req.central_approved_at),
        "rejected_by": req.decided_by if req.state == "rejected" else None,
        "decision_note": req.decision_note, "completed_at": iso(req.completed_at),
        "failure_reason": req.failure_reason,
    }
