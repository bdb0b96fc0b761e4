"""Approval under the two-person rule, then execution: issue, renew, change or revoke.

Approving is one conditional UPDATE on the request row (state = 'submitted' and the approval
slot still empty), so two approvers clicking at the same moment cannot both win: exactly one
moves the request to 'approved' and only that one calls the CA."""
from __future__ import annotations

import logging

from sqlalchemy import bindparam, case, select, true, update

from ca import audit
from ca.clock import Clock
from ca.errors import CAError, Conflict, HsmUnavailable, PermissionDenied
from ca.issuance.service import IssuanceService, IssueRequest
from ca.ra import notify  # e-mail notices (outbox)
from ca.ra import restore  # issue 6: the restore branch
from ca.ra.roles import Caller
from ca.ra.scope import Scope
from ca.ra.subscribers import require_active_domain
from ca.revocation import revoke
from ca.store.database import Database, is_transient
from ca.store.models import Certificate
from ca.store.models_ra import RaRequest

log = logging.getLogger(__name__)
DEFAULT_CA = "issuing"


def _check(req: RaRequest, caller: Caller) -> None:
    """The state and the two-person rule (the caller's role and domain are checked before)."""
    if req.state != "submitted":
        if req.approved_by is not None:
            # Whichever way a double approval races, the loser hears the same thing.
            raise Conflict(f"request {req.id} is already approved by {req.approved_by} "
                           f"({req.state})", code="already_approved")
        raise Conflict(f"request {req.id} is {req.state}; only a submitted request can be "
                       f"approved", code="wrong_state")
    # Chữ ký nháy: whoever prepared or submitted the request does not approve it.
    if caller.username in (req.created_by, req.submitted_by):
        raise PermissionDenied("the approver must be a different person from the one who "
                               "prepared or submitted the request", code="two_person_rule")


def _claim(s, caller: Caller, req: RaRequest, now) -> tuple[str, audit.Entry]:
    """The caller's approval slot, taken by one conditional UPDATE (nothing changes when it
    raises). Returns the request's state afterwards and the audit entry to write with it."""
    central = req.central_required and caller.role == "central_operator" \
        and req.central_approved_by is None
    if central:
        mine, mine_at, other = (RaRequest.central_approved_by,
                                RaRequest.central_approved_at, RaRequest.approved_by)
    else:
        if req.approved_by is not None:
            what = ("a central operator's approval" if req.central_required
                    else "nothing more")
            raise Conflict(f"request {req.id} is already approved by {req.approved_by}; it "
                           f"waits for {what}", code="already_approved")
        mine, mine_at, other = (RaRequest.approved_by, RaRequest.approved_at,
                                RaRequest.central_approved_by)
    if req.central_required:
        complete = other.is_not(None)
        distinct = other.is_(None) | (other != caller.username)
    else:
        complete, distinct = true(), true()
    result = s.execute(
        update(RaRequest).where(RaRequest.id == req.id, RaRequest.state == "submitted",
                                mine.is_(None), distinct)
        .values({mine: caller.username, mine_at: now,
                 RaRequest.state: case((complete, "approved"), else_="submitted")
                 if req.central_required else "approved"})
        .returning(RaRequest.state))
    row = result.first()
    if row is None:
        raise Conflict(f"request {req.id} was decided by someone else meanwhile",
                       code="already_approved")
    entry = audit.Entry("request.approve", caller.actor, now, f"request:{req.id}",
                        req.domain_id, {"slot": "central" if central else "domain",
                                        "state": row.state})
    return row.state, entry


def _job(s, req: RaRequest) -> dict:
    """What carrying out the approved request needs, read in the approval's transaction."""
    old_not_after = None
    if req.target_serial:
        old_not_after = s.execute(select(Certificate.not_after).where(
            Certificate.serial == req.target_serial)).scalars().first()
    return dict(kind=req.type, profile=req.profile, csr=req.csr_pem, sub=req.subscriber_id,
                days=req.validity_days, target=req.target_serial, reason=req.reason,
                old_not_after=old_not_after, domain_id=req.domain_id)


def _service(issuance):
    """An IssuanceService, None, or a factory of one called only when the CA is needed (the
    HSM is not touched for a revocation)."""
    return issuance() if callable(issuance) else issuance


def approve(db: Database, clock: Clock, caller: Caller, request_id: int,
            issuance, ca_name: str = DEFAULT_CA) -> RaRequest:
    """Record the caller's approval; when the request has every approval it needs, carry it
    out and return it in its final state. `issuance`: an IssuanceService, None (restore,
    revoke) or a callable returning one, called only for issue/renew/change."""
    now = clock.now()
    with db.transaction() as s:
        req = Scope(s, caller).request(request_id)
        caller.require("request.approve")
        require_active_domain(s, caller)
        _check(req, caller)
        # --- restore (issue 6, ca.ra.restore): identity check recorded; 1 or 2 approvers ---
        if req.type == "restore" and not restore.before_approval(s, req, caller, now):
            return req  # first of two approvers recorded; the request stays submitted
        # --- end restore ---
        new_state, entry = _claim(s, caller, req, now)
        audit.record_many(s, [entry])
        job = _job(s, req) if new_state == "approved" else None
    if new_state != "approved":
        return _reload(db, request_id)
    return execute(db, clock, request_id, issuance, actor=caller.actor, ca_name=ca_name,
                   job=job)


def _reload(db: Database, request_id: int) -> RaRequest:
    with db.transaction() as s:
        return s.get(RaRequest, request_id)


def _issue_request(request_id: int, data: dict, actor: str, ca_name: str) -> IssueRequest:
    kind = data["kind"]
    return IssueRequest(
        ca=ca_name, profile=data["profile"], csr=data["csr"], actor=actor,
        subscriber_id=data["sub"],
        # a change without a CSR re-certifies the key of the certificate it replaces
        reuse_key_serial=(data["target"] if kind == "change" and not data["csr"] else None),
        validity_days=(data["days"] or (1095 if kind == "renew" else None)),
        not_after=data["old_not_after"] if kind == "change" else None,
        details={"request_id": request_id},
        csr_stored=True)  # ca.ra.requests.prepare verified it before storing it


def _revoke_replaced(db: Database, clock: Clock, request_id: int, data: dict, serial: str,
                     actor: str) -> None:
    """A change: the certificate it replaces is revoked once the new one is issued."""
    try:
        revoke(db, clock, serial=data["target"], reason=data["reason"], actor=actor,
               details={"request_id": request_id, "replaced_by": serial})
    except Conflict:
        log.info("certificate %s was already revoked", data["target"])


def execute(db: Database, clock: Clock, request_id: int, issuance,
            *, actor: str, ca_name: str = DEFAULT_CA, job: dict | None = None) -> RaRequest:
    """Carry out an approved request, then record issued/done/failed (conditional UPDATE).
    `job`: what _job() read in the approving transaction (else it is read here)."""
    if job is None:
        with db.transaction() as s:
            req = s.get(RaRequest, request_id)
            state, job = req.state, _job(s, req)
        if state != "approved":
            raise Conflict(f"request {request_id} is {state}, not approved", code="wrong_state")
    data, kind = job, job["kind"]
    serial, final, failure = None, "done", None
    details = {"request_id": request_id}
    try:
        if kind in ("issue", "renew", "change"):
            cert = _service(issuance).issue(_issue_request(request_id, data, actor, ca_name))
            serial, final = cert.serial, "issued"
            if kind == "change":
                _revoke_replaced(db, clock, request_id, data, serial, actor)
        elif kind == "revoke":
            revoke(db, clock, serial=data["target"], reason=data["reason"], actor=actor,
                   details=details)
        # restore: the key-device operation is carried out on the token; approval completes it.
    except HsmUnavailable:
        # issue 8: the HSM is down; nothing was signed or released (the reserved serial is
        # marked failed). Undo the approval so that it can be given again when the HSM is back.
        undo_approval(db, clock, request_id, actor=actor)
        raise
    except CAError as exc:
        final, failure = "failed", f"{exc.code}: {exc.message}"
    except Exception as exc:  # the CA must not leave a request hanging in 'approved'
        if is_transient(exc):  # issue 8: the database dropped mid-way; see resolve_interrupted
            if resolve_interrupted(db, clock, request_id, actor=actor) == "submitted":
                raise
            return _reload(db, request_id)
        log.exception("request %s failed", request_id)
        final, failure = "failed", f"internal_error: {type(exc).__name__}"
    now = clock.now()
    issued = None
    with db.transaction() as s:
        # --- restore (issue 6): the one-time code, in the transaction that completes it ---
        if kind == "restore" and final == "done" and s.get(restore.RestoreRequest, request_id):
            issued, failure = restore.release_code(s, request_id, actor=actor, at=now)
            final = "done" if issued else "failed"
        # --- end restore ---
        req = _complete(s, clock, request_id, final, serial, failure, actor, now)
        if issued is not None:  # restore: shown once by the caller, never stored in clear
            req.unblock_code, req.unblock_expires_at = issued.code, issued.expires_at
        return req


def _complete(s, clock: Clock, request_id: int, final: str, serial: str | None,
              failure: str | None, actor: str, now) -> RaRequest:
    """One request's final state, audit event and notices (complete_many), returned."""
    domain_id = s.execute(select(RaRequest.domain_id).where(
        RaRequest.id == request_id)).scalar_one()
    complete_many(s, clock, actor, now, [(request_id, domain_id, final, serial, failure)])
    return s.get(RaRequest, request_id, populate_existing=True)


def complete_many(s, clock: Clock, actor: str, now, items: list[tuple]) -> None:
    """Final states of approved requests, in the caller's transaction: `items` are (request id,
    domain id, state, certificate serial, failure). One conditional executemany UPDATE (a
    request that is no longer 'approved' keeps its state), the audit events with one
    record_many, the notices."""
    if not items:
        return
    table = RaRequest.__table__
    s.connection().execute(
        update(table).where(table.c.id == bindparam("b_id"), table.c.state == "approved")
        .values(state=bindparam("b_state"), certificate_serial=bindparam("b_serial"),
                completed_at=now, failure_reason=bindparam("b_failure")),
        [{"b_id": rid, "b_state": st, "b_serial": serial, "b_failure": failure}
         for rid, _dom, st, serial, failure in items])
    audit.record_many(s, [audit.Entry(f"request.{st}", actor, now, f"request:{rid}", dom,
                                      {"certificate_serial": serial, "failure": failure})
                          for rid, dom, st, serial, failure in items])
    for rid, _dom, st, _serial, _failure in items:
        notify.request_event(s, clock, rid, st)  # e-mail outbox (docs/notices.md)


def undo_approval(db: Database, clock: Clock, request_id: int, *, actor: str,
                  reason: str = "hsm_unavailable") -> bool:
    """issue 8: an approved request that could not be carried out for an outage (HSM down)
    goes back to 'submitted' with its approval slots empty, audited; False if it had moved on.
    A conditional UPDATE, so retrying it after a dropped connection (Database.run) is safe."""
    def work(s) -> bool:
        domain_id = s.execute(select(RaRequest.domain_id).where(
            RaRequest.id == request_id)).scalar_one_or_none()
        return undo_in(s, request_id, domain_id, actor=actor, at=clock.now(), reason=reason)
    return db.run(work)


def undo_in(s, request_id: int, domain_id: int | None, *, actor: str, at,
            reason: str = "hsm_unavailable") -> bool:
    """undo_approval's writes in the caller's transaction."""
    done = s.execute(update(RaRequest).where(RaRequest.id == request_id,
                                             RaRequest.state == "approved")
                     .values(state="submitted", approved_by=None, approved_at=None,
                             central_approved_by=None, central_approved_at=None))
    if done.rowcount != 1:
        return False
    audit.record(s, "request.approve.undone", actor=actor, at=at,
                 target=f"request:{request_id}", domain_id=domain_id, details={"reason": reason})
    return True


def resolve_interrupted(db: Database, clock: Clock, request_id: int, *, actor: str) -> str:
    """issue 8: a request left 'approved' by a database outage (the connection dropped while it
    was carried out; a COMMIT may or may not have reached the server). If its certificate was
    stored (a `cert.issue` event names the request) or its revocation took effect, the request
    is completed with that result; otherwise its approval is undone so that it can be given
    again. Nothing is replayed blindly. Returns the request's state afterwards."""
    import json
    from ca.store.models import AuditEvent

    def work(s) -> str | None:
        req = s.get(RaRequest, request_id)
        if req is None or req.state != "approved":
            return req.state if req is not None else "missing"
        kind, domain_id, target = req.type, req.domain_id, req.target_serial
        since = min(t for t in (req.approved_at, req.central_approved_at, req.submitted_at,
                                req.created_at) if t is not None)
        serial, final = None, None
        if kind in ("issue", "renew", "change"):
            for ev_target, text in s.execute(select(AuditEvent.target, AuditEvent.details).where(
                    AuditEvent.action == "cert.issue", AuditEvent.at >= since)):
                if json.loads(text or "{}").get("request_id") == request_id:
                    serial, final = ev_target.split(":", 1)[1], "issued"
        elif kind == "revoke" and target:
            revoked = s.execute(select(Certificate.revoked_at).where(
                Certificate.serial == target)).scalars().first()
            final = "done" if revoked is not None else None
        if final is None:
            return None
        now = clock.now()
        s.execute(update(RaRequest).where(RaRequest.id == request_id,
                                          RaRequest.state == "approved")
                  .values(state=final, certificate_serial=serial, completed_at=now))
        audit.record(s, f"request.{final}", actor=actor, at=now,
                     target=f"request:{request_id}", domain_id=domain_id,
                     details={"certificate_serial": serial, "failure": None, "recovered": True})
        return final

    state = db.run(work)
    if state == "issued":
        req = _reload(db, request_id)
        if req.type == "change" and req.target_serial:  # finish what execute() would have
            try:
                revoke(db, clock, serial=req.target_serial, reason=req.reason, actor=actor,
                       details={"request_id": request_id, "replaced_by": req.certificate_serial,
                                "recovered": True})
            except Conflict:
                pass  # already revoked before the outage
    if state is not None:
        return state
    if undo_approval(db, clock, request_id, actor=actor, reason="database_unavailable"):
        return "submitted"
    return _reload(db, request_id).state  # decided meanwhile by someone else


def recover_interrupted(db: Database, clock: Clock, older_than, *, actor: str) -> list:
    """issue 8: resolve every request left 'approved' for longer than `older_than` (a process
    died or lost the database while carrying it out): [(request id, state afterwards)]."""
    cutoff = clock.now() - older_than
    with db.transaction() as s:
        ids = list(s.execute(select(RaRequest.id).where(
            RaRequest.state == "approved", RaRequest.approved_at <= cutoff)
            .order_by(RaRequest.id)).scalars())
    return [(rid, resolve_interrupted(db, clock, rid, actor=actor)) for rid in ids]
