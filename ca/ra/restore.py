"""Restore requests for key devices: device and identity checks, approvers, one-time code, loss."""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca import audit
from ca.clock import Clock
from ca.errors import CAError, Conflict, InvalidInput, NotFound, PermissionDenied, PolicyViolation
from ca.names import clean_text
from ca.ra.roles import Caller
from ca.ra.scope import Scope
from ca.store.models import AuditEvent, Subscriber
from ca.store.models_ra import RaRequest
from ca.store.models_restore import IDENTITY_METHODS, RestoreRequest
from ca.store.models_tokens import KeyDevice
from ca.tokens import registry, unblock

RESTORABLE_STATES = ("issued", "locked", "restored")
OPEN_STATES = ("draft", "submitted", "approved")
APPROVERS_ENV = "GOVCA_RESTORE_APPROVERS"  # 1 (default) or 2 distinct approvers


def approvers_required() -> int:
    """Policy: how many distinct approvers a restore request needs (1 or 2)."""
    raw = os.environ.get(APPROVERS_ENV, "1").strip()
    return 2 if raw == "2" else 1


def _fits(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31


def scoped_devices(session: Session, caller: Caller):
    """Clause: devices whose holder is inside the caller's delegation."""
    return KeyDevice.holder_id.in_(
        select(Subscriber.id).where(Scope(session, caller).subscribers()).scalar_subquery())


def scoped_device(session: Session, caller: Caller, device_id: Any) -> KeyDevice:
    """One device in scope; missing and out of scope are the same NotFound."""
    dev = session.execute(select(KeyDevice).where(
        KeyDevice.id == device_id, scoped_devices(session, caller))).scalar_one_or_none() \
        if _fits(device_id) else None
    if dev is None:
        raise NotFound(f"no key device with id {device_id}", field="device_id")
    return dev


def check_new(session: Session, scope: Scope, body: dict,
              subscriber_id: int) -> KeyDevice | None:
    """Validation of a new restore request (called by ca.ra.requests.create). Without
    device_id it is a legacy request with no device (kept for existing API clients): approval
    only marks it done."""
    device_id = body.get("device_id")
    if device_id is None:
        return None
    if not _fits(device_id):
        raise InvalidInput("device_id must be a positive integer", field="device_id",
                           code="wrong_type")
    try:
        dev = scoped_device(session, scope.caller, device_id)
    except NotFound:
        dev = None
    if dev is None or dev.holder_id != subscriber_id:
        raise InvalidInput(f"unknown key device {device_id} of this subscriber",
                           field="device_id", code="unknown_device")
    if dev.state not in RESTORABLE_STATES or not dev.serial:
        raise Conflict(f"device {dev.id} is {dev.state}; only a device in service can be "
                       "restored", field="device_id", code="device_not_in_service")
    if session.execute(select(RestoreRequest.request_id).join(
            RaRequest, RaRequest.id == RestoreRequest.request_id).where(
            RestoreRequest.device_id == dev.id, RaRequest.state.in_(OPEN_STATES))).first():
        raise Conflict("an open restore request for this device exists already",
                       field="device_id", code="duplicate_request")
    return dev


def attach(session: Session, req: RaRequest, device: KeyDevice) -> RestoreRequest:
    row = RestoreRequest(request_id=req.id, device_id=device.id)
    session.add(row)
    session.flush()
    return row


def detail(session: Session, request_id: int) -> RestoreRequest:
    row = session.get(RestoreRequest, request_id)
    if row is None:
        raise NotFound(f"no restore request with id {request_id}", field="request_id")
    return row


def create(session: Session, clock: Clock, caller: Caller, *, subscriber_id: Any,
           device_id: Any, profiles: dict) -> RaRequest:
    """A restore request for one device (staff for their own device, officers in scope)."""
    from ca.ra import requests as ra_requests
    return ra_requests.create(session, clock, caller, {
        "type": "restore", "subscriber_id": subscriber_id, "device_id": device_id}, profiles)


def _parse_time(value: Any, now: dt.datetime) -> dt.datetime:
    if value in (None, ""):
        return now
    if not isinstance(value, str):
        raise InvalidInput("checked_at must be a date and time", field="checked_at",
                           code="invalid_date")
    try:
        at = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput("checked_at must be a date and time (YYYY-MM-DDTHH:MM)",
                           field="checked_at", code="invalid_date") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.timezone(dt.timedelta(hours=7)))  # local time in Vietnam
    at = at.astimezone(dt.timezone.utc)
    if now.tzinfo is None:
        at = at.replace(tzinfo=None)
    if at > now + dt.timedelta(minutes=5) or at < now - dt.timedelta(days=30):
        raise InvalidInput("the identity check must have happened in the last 30 days",
                           field="checked_at", code="invalid_date")
    return at


def record_identity_check(session: Session, clock: Clock, caller: Caller, request_id: int, *,
                          method: Any, checked_at: Any = None, note: Any = None) -> RestoreRequest:
    """The officer records who checked the holder's identity, how and when (audited)."""
    req = Scope(session, caller).request(request_id)
    if not (caller.can("request.create") or caller.can("request.approve")):
        raise PermissionDenied("only RA officers record identity checks", code="forbidden")
    if req.type != "restore":
        raise InvalidInput("only a restore request has an identity check", field="request_id")
    if req.state != "submitted":
        raise Conflict(f"request {req.id} is {req.state}", code="wrong_state")
    if method not in IDENTITY_METHODS:
        raise InvalidInput(f"method is one of {', '.join(IDENTITY_METHODS)}", field="method")
    now = clock.now()
    when = _parse_time(checked_at, now)
    if note is not None and not isinstance(note, str):
        raise InvalidInput("note must be text", field="note", code="wrong_type")
    note = clean_text(note, field_name="note", max_chars=500) if note and note.strip() else None
    row = detail(session, req.id)
    row.identity_checked_by, row.identity_method = caller.username, method
    row.identity_checked_at, row.identity_recorded_at, row.identity_note = when, now, note
    session.flush()
    audit.record(session, "request.identity_check", actor=caller.actor, at=now,
                 target=f"request:{req.id}", domain_id=req.domain_id,
                 details={"method": method, "checked_at": when.isoformat(), "note": note,
                          "device_id": row.device_id})
    return row


def before_approval(session: Session, req: RaRequest, caller: Caller, now: dt.datetime) -> bool:
    """Called by ca.ra.approval.approve inside its transaction: refuses approval without an
    identity check; where policy wants two approvers, records the first one and returns False
    (the request stays submitted). True: go on with the approval."""
    row = session.get(RestoreRequest, req.id)
    if row is None:  # a legacy restore request naming no device
        return True
    if row.identity_checked_by is None:
        raise PolicyViolation("the holder's identity check (who, how, when) must be recorded "
                              "before a restore request is approved", field="identity",
                              code="identity_check_required")
    if approvers_required() < 2:
        return True
    if row.first_approved_by is None:
        row.first_approved_by, row.first_approved_at = caller.username, now
        session.flush()
        audit.record(session, "request.approve", actor=caller.actor, at=now,
                     target=f"request:{req.id}", domain_id=req.domain_id,
                     details={"slot": "restore-first", "state": "submitted"})
        return False
    if row.first_approved_by == caller.username:
        raise PermissionDenied("a restore needs two different approvers",
                               code="two_person_rule")
    return True


def release_code(session: Session, request_id: int, *, actor: str,
                 at: dt.datetime) -> tuple[unblock.IssuedCode | None, str | None]:
    """Called by ca.ra.approval.execute in the transaction that completes the request: the
    one-time unblock code (returned to be shown once; only its hash is stored)."""
    row = detail(session, request_id)
    try:
        issued = unblock.issue_authorisation(
            session, device_id=row.device_id, actor=actor, at=at,
            request_ref=f"request:{request_id}",
            details={"identity_method": row.identity_method,
                     "identity_checked_by": row.identity_checked_by})
    except CAError as exc:  # raised before anything is written
        return None, f"{exc.code}: {exc.message}"
    row.authorisation_id, row.code_expires_at = issued.authorisation_id, issued.expires_at
    session.flush()
    return issued, None


@dataclass(frozen=True)
class LostReport:
    device_id: int
    state: str
    request_ids: list[int]
    skipped: list[str]


def report_lost(session: Session, clock: Clock, caller: Caller, device_id: Any, *,
                state: str = "lost", profiles: dict, note: Any = None) -> LostReport:
    """A device lost or destroyed (by its holder or an officer): mark it through the registry
    and raise revoke requests (keyCompromise) for its certificates in the normal path."""
    from ca.ra import requests as ra_requests
    if state not in ("lost", "destroyed"):
        raise InvalidInput("a device is reported lost or destroyed", field="state")
    dev = scoped_device(session, caller, device_id)
    if not (caller.can("request.create") or caller.subscriber_id == dev.holder_id):
        raise PermissionDenied("only the holder or an RA officer reports a lost device",
                               code="forbidden")
    if note is not None and not isinstance(note, str):
        raise InvalidInput("note must be text", field="note", code="wrong_type")
    reason = clean_text(note, field_name="note", max_chars=500) if note and note.strip() \
        else None
    pending = registry.end_device(session, dev.id, state, actor=caller.actor, at=clock.now(),
                                  reason=reason)
    ids, skipped = [], []
    for p in pending:
        if session.execute(select(RaRequest.id).where(
                RaRequest.target_serial == p.serial, RaRequest.type == "revoke",
                RaRequest.state.in_(OPEN_STATES))).first():
            skipped.append(p.serial)
            continue
        req = ra_requests.create(session, clock, caller, {
            "type": "revoke", "subscriber_id": dev.holder_id, "serial": p.serial,
            "reason": p.reason}, profiles)
        ids.append(req.id)
    return LostReport(device_id=dev.id, state=state, request_ids=ids, skipped=skipped)


def device_history(session: Session, caller: Caller, device_id: Any) -> list[dict]:
    """The device's audit trail (transitions, codes issued and redeemed), in scope."""
    dev = scoped_device(session, caller, device_id)
    rows = session.execute(select(AuditEvent).where(
        AuditEvent.target == f"device:{dev.id}").order_by(AuditEvent.seq)).scalars()
    out = []
    for e in rows:
        try:
            details = json.loads(e.details)
        except ValueError:
            details = {}
        out.append({"at": e.at, "action": e.action, "actor": e.actor,
                    "from": details.get("from"), "to": details.get("to"),
                    "reason": details.get("reason")})
    return out


def restore_queue(session: Session, caller: Caller, now: dt.datetime,
                  include_closed: bool = False) -> list[dict]:
    """Restore requests in scope with their device, identity check and due time."""
    q = select(RaRequest, RestoreRequest, KeyDevice).join(
        RestoreRequest, RestoreRequest.request_id == RaRequest.id).join(
        KeyDevice, KeyDevice.id == RestoreRequest.device_id).where(
        Scope(session, caller).requests())
    if not include_closed:
        q = q.where(RaRequest.state.in_(OPEN_STATES))
    out = []
    for req, row, dev in session.execute(q.order_by(RaRequest.due_at, RaRequest.id).limit(500)):
        out.append({"id": req.id, "state": req.state, "subscriber_id": req.subscriber_id,
                    "device_id": dev.id, "device_label": dev.label, "device_serial": dev.serial,
                    "device_type": dev.device_type, "device_state": dev.state,
                    "created_by": req.created_by, "due_at": req.due_at,
                    "overdue": bool(req.due_at and req.state in ("submitted", "approved")
                                    and req.due_at < now),
                    "identity_checked_by": row.identity_checked_by,
                    "identity_method": row.identity_method,
                    "identity_checked_at": row.identity_checked_at,
                    "first_approved_by": row.first_approved_by,
                    "approved_by": req.approved_by, "completed_at": req.completed_at,
                    "failure_reason": req.failure_reason})
    return out
