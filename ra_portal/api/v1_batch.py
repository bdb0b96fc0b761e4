"""/api/v1 batches (issue 8): create many requests in one call, approve many in one call.

POST /requests/batch          {"requests": [<POST /requests body>, ...], "submit": true}
POST /requests/approve-batch  {"ids": [1, 2, ...]}

Both answer 200 with one result per item, in order: {"index", "ok": true, ...} or
{"index", "ok": false, "status", "error": {"code", "message", "field"}}. A bad item changes
nothing and does not stop the others; a malformed body (not JSON, unknown field, wrong type,
empty list, more than BATCH_MAX items, duplicate ids) is a 400 and changes nothing.
"""
from __future__ import annotations

import base64

from ca.errors import CAError, InvalidInput
from ca.ra import approval_batch
from ca.ra import requests as ra_requests
from ca.ra.scope import Scope
from ca.ra.subscribers import require_active_domain
from ra_portal import services
from ra_portal.api import STATUS, bp, caller, json_body, only_fields

BATCH_MAX = approval_batch.BATCH_MAX  # items per call


def _status(exc: CAError) -> int:
    return next((st for cls, st in STATUS if isinstance(exc, cls)), 500)


def _failure(index: int, exc: CAError, **extra) -> dict:
    status = _status(exc)
    if status == 500:  # never an internal message to the client (the single call's rule)
        err = {"code": "internal_error", "message": "the request could not be completed"}
    else:
        err = {"code": exc.code, "message": exc.message}
        if exc.field:
            err["field"] = exc.field
    return {"index": index, "ok": False, "status": status, "error": err, **extra}


def _items(body: dict, name: str) -> list:
    items = body.get(name)
    if not isinstance(items, list):
        raise InvalidInput(f"{name} must be a list", field=name, code="wrong_type")
    if not items:
        raise InvalidInput(f"{name} is empty: send 1 to {BATCH_MAX} items", field=name,
                           code="empty_batch")
    if len(items) > BATCH_MAX:
        raise InvalidInput(f"at most {BATCH_MAX} {name} per call ({len(items)} sent); split "
                           f"the batch", field=name, code="too_many_items")
    return items


def pem(der: bytes) -> str:
    b64 = base64.b64encode(der).decode("ascii")
    return ("-----BEGIN CERTIFICATE-----\n"
            + "\n".join(b64[k:k + 64] for k in range(0, len(b64), 64))
            + "\n-----END CERTIFICATE-----\n")


@bp.post("/requests/batch")
def create_requests_batch():
    """Each item is validated (and submitted, unless it or the batch says "submit": false) on
    its own, before anything is written for it: a bad item leaves nothing behind. The good ones
    are written together (one INSERT, their audit events by one record_many) and committed in
    one transaction; the checks read in a transaction of their own before it (see below)."""
    svc = services()
    who = caller()
    body = only_fields(json_body(), {"requests", "submit"})
    items = _items(body, "requests")
    submit = body.get("submit", True)
    if submit is None:
        submit = True
    if not isinstance(submit, bool):
        raise InvalidInput("submit must be true or false", field="submit", code="wrong_type")
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidInput(f"requests[{k}] must be a JSON object (a POST /requests body)",
                               field="requests", code="wrong_type")
    ra_requests.parse_csrs_ahead(items)  # CPU work, before the writer's transaction
    now = svc.clock.now()
    results: list[dict | None] = []
    good: list[tuple[int, ra_requests.Prepared]] = []

    def prepare_all(s) -> None:
        require_active_domain(s, who)
        shared: dict = {"domain_active": True}
        # The batch's subscribers in one query; prepare() looks up any other id itself.
        found = Scope(s, who).subscribers_by_id(item.get("subscriber_id") for item in items)
        shared.update({("subscriber", sid): sub for sid, sub in found.items()})
        with s.no_autoflush:  # the good items are written together by store()
            for i, item in enumerate(items):
                if "submit" not in item:
                    item = {**item, "submit": submit}
                try:
                    good.append((i, ra_requests.prepare(s, svc.clock, who, item, svc.profiles,
                                                        batch=shared)))
                    results.append(None)
                except CAError as exc:  # checked before anything is written for it
                    results.append(_failure(i, exc))

    if any(item.get("type") == "restore" for item in items):
        # A restore's checks see the batch's earlier items: everything in one transaction.
        with svc.db.transaction() as s:
            prepare_all(s)
            stored = ra_requests.store(s, svc.clock, who, [p for _, p in good]) if good else []
    else:
        # The checks read beside the SQLite writer; the writing transaction re-checks only
        # what another creator may have changed meanwhile (an open request on the same
        # certificate) and keeps the writer's lock for the writes alone.
        with svc.db.read() as s:
            prepare_all(s)
        stored = []
        if good:
            with svc.db.transaction() as s:
                require_active_domain(s, who)
                kept = []
                for i, p in good:
                    try:
                        ra_requests.recheck(s, p)
                        kept.append((i, p))
                    except CAError as exc:
                        results[i] = _failure(i, exc)
                good = kept
                stored = ra_requests.store(s, svc.clock, who, [p for _, p in good]) \
                    if good else []
    for (i, _), req in zip(good, stored):
        results[i] = {"index": i, "ok": True, "request": ra_requests.summary(req, now)}
    return {"results": results, "created": sum(1 for r in results if r["ok"]),
            "failed": sum(1 for r in results if not r["ok"])}


@bp.post("/requests/approve-batch")
def approve_requests_batch():
    """Every id is decided as POST /requests/{id}/approve would; the certificates of all the
    approved issue/renew/change requests are made by one issue_batch call."""
    svc = services()
    body = only_fields(json_body(), {"ids"})
    ids = _items(body, "ids")
    for k, rid in enumerate(ids):
        if isinstance(rid, bool) or not isinstance(rid, int) or not 0 < rid < 2**31:
            raise InvalidInput(f"ids[{k}] must be a positive integer", field="ids",
                               code="wrong_type")
    if len(set(ids)) != len(ids):
        dup = next(r for k, r in enumerate(ids) if r in ids[:k])
        raise InvalidInput(f"request {dup} appears twice in ids", field="ids",
                           code="duplicate_id")
    outcome = approval_batch.approve_batch(svc.db, svc.clock, caller(), ids, svc.issuance)
    now = svc.clock.now()
    results = []
    for i, (req, err, cert) in enumerate(outcome):
        extra = {"id": ids[i]}
        if err is not None:
            if req is not None:  # e.g. HSM down: approval undone, the request is submitted
                extra["request"] = ra_requests.summary(req, now)
            results.append(_failure(i, err, **extra))
            continue
        item = {"index": i, "ok": True, **extra, "request": ra_requests.summary(req, now)}
        if cert is not None:
            item["certificate"] = {"serial": cert.serial, "pem": pem(cert.der),
                                   "not_after": cert.not_after.isoformat()}
        results.append(item)
    return {"results": results,
            "issued": sum(1 for r in results if r.get("certificate")),
            "failed": sum(1 for r in results if not r["ok"]
                          or r["request"]["state"] == "failed")}
