"""Approval of many requests in one call (POST /api/v1/requests/approve-batch, issue 8):
the single path's rules per request (ca.ra.approval), one transaction for the approvals, one
IssuanceService.issue_batch for the certificates, one transaction for the results."""
from __future__ import annotations

import logging

from sqlalchemy import select, update

from ca import audit
from ca.clock import Clock
from ca.errors import CAError, Conflict, HsmUnavailable, NotFound, PolicyViolation
from ca.ra.approval import (DEFAULT_CA, _check, _claim, _issue_request, _job, _revoke_replaced,
                            _service, complete_many, resolve_interrupted, undo_approval,
                            undo_in)
from ca.ra.roles import Caller
from ca.ra.scope import Scope
from ca.ra.subscribers import require_active_domain
from ca.revocation import revoke
from ca.store.database import Database
from ca.store.models_ra import RaRequest

log = logging.getLogger(__name__)

BATCH_MAX = 500


class NotBatchable(PolicyViolation):
    """A request that is approved one at a time (restore: identity check, one-time code)."""
    code = "not_batchable"


def approve_batch(db: Database, clock: Clock, caller: Caller, ids: list[int], issuance,
                  ca_name: str = DEFAULT_CA) -> list[tuple[RaRequest | None, CAError | None,
                                                           object]]:
    """Approve several requests: each id gets exactly what POST /requests/{id}/approve would
    decide (scope: an id outside the caller's delegation is "not found" like a missing one;
    two-person rule; state; central approval). The requests are read and checked in a read
    transaction and every approval is claimed in ONE writing transaction (conditional UPDATEs,
    one record_many); every certificate is made by ONE IssuanceService.issue_batch call, whose
    storing transaction also writes the final states of the issue and renew requests; revoke
    requests (and the replaced certificate of a change) are revoked one by one, and their final
    states written in one more transaction. Restore requests are refused (NotBatchable).
    Returns, per id in order, (request or None, error or None, certificate or None). Crash
    safety is the single path's: approved requests are what resolve_interrupted /
    recover_interrupted settle (the cert.issue event names the request)."""
    caller.require("request.approve")
    now = clock.now()
    out: list = [[None, None, None] for _ in ids]
    jobs: dict[int, dict] = {}  # index -> job of an approved request
    # The requests are read and checked beside the SQLite writer; the approvals are then
    # claimed by conditional UPDATEs (state still 'submitted', the slot still empty), so a
    # request decided by someone else in between is a Conflict, exactly as in one transaction.
    candidates: list[int] = []
    with db.read() as s:
        require_active_domain(s, caller)
        found = {r.id: r for r in s.execute(select(RaRequest).where(
            RaRequest.id.in_(ids), Scope(s, caller).requests())).scalars()}
        for i, rid in enumerate(ids):
            req = found.get(rid)
            try:
                if req is None:  # the very words of Scope.request: missing or out of scope
                    raise NotFound(f"no request with id {rid}", field="request_id")
                if req.type == "restore":
                    raise NotBatchable(f"request {rid} is a restore request: approve it alone "
                                       f"(POST /api/v1/requests/{rid}/approve) after the "
                                       f"identity check", field="ids")
                _check(req, caller)
                candidates.append(i)
            except CAError as exc:  # nothing was written for this one
                out[i][1] = exc
        pending = {i: _job(s, found[ids[i]]) for i in candidates}  # used if the claim wins
    with db.transaction() as s:
        require_active_domain(s, caller)
        entries: list = []
        plain: list[int] = []  # indexes a single domain approval completes: one UPDATE for all
        for i in candidates:
            req = found[ids[i]]
            if not req.central_required and req.approved_by is None:
                plain.append(i)
                continue
            try:
                state, entry = _claim(s, caller, req, now)  # central approval: one by one
                entries.append(entry)
                if state == "approved":
                    jobs[i] = pending[i]
            except CAError as exc:  # nothing was written for this one
                out[i][1] = exc
        if plain:  # _claim's conditional UPDATE for many rows at once
            won = set(s.execute(update(RaRequest).where(
                RaRequest.id.in_([ids[i] for i in plain]), RaRequest.state == "submitted",
                RaRequest.approved_by.is_(None))
                .values(approved_by=caller.username, approved_at=now, state="approved")
                .returning(RaRequest.id)).scalars())
            for i in plain:
                req = found[ids[i]]
                if ids[i] not in won:
                    out[i][1] = Conflict(f"request {req.id} was decided by someone else "
                                         f"meanwhile", code="already_approved")
                    continue
                entries.append(audit.Entry("request.approve", caller.actor, now,
                                           f"request:{req.id}", req.domain_id,
                                           {"slot": "domain", "state": "approved"}))
                jobs[i] = pending[i]
        audit.record_many(s, entries)
    approved = {i: ids[i] for i in jobs}
    final: dict[int, tuple[str, str | None, str | None]] = {}  # i -> (state, serial, failure)
    certs: dict[int, object] = {}
    written: set[int] = set()  # final states already written (with the certificates)

    def settle(s, to_issue: list[int], results: list) -> None:
        """In the transaction that stores the certificates: the final state of every issue or
        renew request (a change waits for its old certificate's revocation), and the undoing
        of approvals the HSM could not carry out."""
        undone = []
        for i, res in zip(to_issue, results):
            if isinstance(res, HsmUnavailable):  # as the single path: approval undone
                undone.append(i)
                out[i][1] = res
            elif isinstance(res, CAError):
                final[i] = ("failed", None, f"{res.code}: {res.message}")
            else:
                final[i], certs[i] = ("issued", res.serial, None), res
        now_ = clock.now()
        for i in undone:
            undo_in(s, ids[i], jobs[i]["domain_id"], actor=caller.actor, at=now_)
        ready = [i for i in to_issue if i in final
                 and not (jobs[i]["kind"] == "change" and final[i][0] == "issued")]
        complete_many(s, clock, caller.actor, now_, [
            (ids[i], jobs[i]["domain_id"], *final[i]) for i in ready])
        written.update(ready)

    try:
        to_issue = [i for i, j in jobs.items() if j["kind"] in ("issue", "renew", "change")]
        if to_issue:
            service = _service(issuance)
            service.issue_batch([_issue_request(ids[i], jobs[i], caller.actor, ca_name)
                                 for i in to_issue],
                                finish=lambda s, results: settle(s, to_issue, results))
        for i, j in jobs.items():
            if j["kind"] == "change" and i in certs:
                try:
                    _revoke_replaced(db, clock, ids[i], j, certs[i].serial, caller.actor)
                except CAError as exc:  # as execute(): the request fails, naming the serial
                    final[i] = ("failed", certs[i].serial, f"{exc.code}: {exc.message}")
            elif j["kind"] == "revoke":
                try:
                    revoke(db, clock, serial=j["target"], reason=j["reason"],
                           actor=caller.actor, details={"request_id": ids[i]})
                    final[i] = ("done", None, None)
                except CAError as exc:
                    final[i] = ("failed", None, f"{exc.code}: {exc.message}")
    except HsmUnavailable:  # the CA could not be reached at all (no key store): nothing signed
        for i in approved:
            if i not in final:
                undo_approval(db, clock, ids[i], actor=caller.actor)
        raise
    except Exception:
        # issue 8: the database (or anything else) failed mid-way. As the single path does
        # for one request: each approved request is completed with what is certain (its
        # certificate stored, its revocation done) or its approval is undone; nothing is
        # replayed blindly. The error is then raised (503 for an outage).
        for i, rid in approved.items():
            try:
                resolve_interrupted(db, clock, rid, actor=caller.actor)
            except Exception:  # still down: recover_interrupted (scheduler/CLI) settles it
                log.warning("request %s left approved; recover_interrupted will settle it", rid)
        raise
    rest = [i for i in final if i not in written]
    with db.transaction() if rest else db.read() as s:  # only reading back, most often
        if rest:
            complete_many(s, clock, caller.actor, clock.now(), [
                (ids[i], jobs[i]["domain_id"], *final[i]) for i in rest])
        wanted = [ids[i] for i in range(len(ids))
                  if i in final or out[i][1] is None or i in approved]
        rows = {r.id: r for r in s.execute(select(RaRequest).where(RaRequest.id.in_(wanted))
                                           .execution_options(populate_existing=True))
                .scalars()} if wanted else {}
        for i, rid in enumerate(ids):
            out[i][0] = rows.get(rid)  # waiting for another approval, undone, or final
            out[i][2] = certs.get(i)
    return [tuple(x) for x in out]
