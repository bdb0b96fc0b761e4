"""/api/v1 requests (create, submit, approve, reject) and certificates (list, get, revoke)."""
from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import request
from sqlalchemy import func, select

from ca.errors import InvalidInput
from ca.ra import approval
from ca.ra import requests as ra_requests
from ca.ra.scope import Scope
from ca.ra.subscribers import Page
from ca.store.models import Certificate
from ra_portal import services
from ra_portal.api import bp, caller, json_body, only_fields
from ra_portal.api.v1_organizations import issued_organization
from ra_portal.api.v1_subscribers import page_dict, query_int, query_text

CERT_STATUSES = ("valid", "revoked", "expired")


def _bool_arg(name: str) -> bool:
    raw = request.args.get(name)
    if raw in (None, "", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise InvalidInput(f"{name} is true or false", field=name)


@bp.get("/requests")
def list_requests():
    svc = services()
    now = svc.clock.now()
    with svc.db.transaction() as s:
        page = ra_requests.list_requests(
            s, caller(), clock=svc.clock, state=query_text("state", 16),
            type=query_text("type", 16), subscriber_id=query_int("subscriber_id"),
            overdue=_bool_arg("overdue"), needs_central=_bool_arg("needs_central"),
            page=query_int("page", 1, high=10**6), per_page=query_int("per_page", 50, high=200))
        return page_dict(page, lambda r: ra_requests.summary(r, now))


@bp.post("/requests")
def create_request():
    svc = services()
    body = json_body()
    with svc.db.transaction() as s:
        req = ra_requests.create(s, svc.clock, caller(), body, svc.profiles)
        return ra_requests.summary(req, svc.clock.now()), 201


@bp.get("/requests/<int:request_id>")
def get_request(request_id: int):
    svc = services()
    with svc.db.transaction() as s:
        return ra_requests.summary(Scope(s, caller()).request(request_id), svc.clock.now())


@bp.post("/requests/<int:request_id>/submit")
def submit_request(request_id: int):
    svc = services()
    with svc.db.transaction() as s:
        req = ra_requests.submit(s, svc.clock, caller(), request_id)
        return ra_requests.summary(req, svc.clock.now())


@bp.post("/requests/<int:request_id>/approve")
def approve_request(request_id: int):
    svc = services()
    # svc.issuance is called only if the request needs the CA (issue, renew, change): a
    # revocation does not touch the HSM. One transaction approves; issuance follows.
    req = approval.approve(svc.db, svc.clock, caller(), request_id, svc.issuance)
    extra = {"unblock_code": req.unblock_code} if getattr(req, "unblock_code", None) else {}
    return {**ra_requests.summary(req, svc.clock.now()), **extra}  # restore: code shown once


@bp.post("/requests/<int:request_id>/reject")
def reject_request(request_id: int):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        Scope(s, who).request(request_id)
        body = only_fields(json_body() if request.content_length else {}, {"reason"})
        req = ra_requests.reject(s, svc.clock, who, request_id, body.get("reason"))
        return ra_requests.summary(req, svc.clock.now())


def cert_status(c: Certificate, now) -> str:
    if c.revoked_at is not None:
        return "revoked"
    return "expired" if c.not_after <= now else "valid"


def cert_dict(c: Certificate, now) -> dict:
    pem = x509.load_der_x509_certificate(c.der).public_bytes(serialization.Encoding.PEM).decode()
    iso = lambda t: t.isoformat() if t else None  # noqa: E731
    return {"serial": c.serial, "status": cert_status(c, now), "pem": pem,
            "subscriber_id": c.subscriber_id, "ca": c.ca.name, "profile": c.profile,
            "subject": c.subject, "not_before": iso(c.not_before), "not_after": iso(c.not_after),
            "revoked_at": iso(c.revoked_at), "revocation_reason": c.revocation_reason,
            "fingerprint_sha256": c.fingerprint_sha256}


@bp.get("/certificates")
def list_certificates():
    svc = services()
    now = svc.clock.now()
    status = query_text("status", 16)
    if status is not None and status not in CERT_STATUSES:
        raise InvalidInput(f"status is one of {', '.join(CERT_STATUSES)}", field="status")
    page_no = query_int("page", 1, high=10**6)
    per_page = query_int("per_page", 50, high=200)
    with svc.db.transaction() as s:
        stmt = select(Certificate).where(Scope(s, caller()).certificates())
        sub_id = query_int("subscriber_id")
        if sub_id is not None:
            stmt = stmt.where(Certificate.subscriber_id == sub_id)
        if status == "revoked":
            stmt = stmt.where(Certificate.revoked_at.is_not(None))
        elif status == "valid":
            stmt = stmt.where(Certificate.revoked_at.is_(None), Certificate.not_after > now)
        elif status == "expired":
            stmt = stmt.where(Certificate.revoked_at.is_(None), Certificate.not_after <= now)
        total = s.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
        rows = s.execute(stmt.order_by(Certificate.id.desc()).limit(per_page)
                         .offset((page_no - 1) * per_page)).scalars().all()
        return page_dict(Page(list(rows), page_no, per_page, total), lambda c: cert_dict(c, now))


@bp.get("/certificates/<serial>")
def get_certificate(serial: str):
    svc = services()
    with svc.db.transaction() as s:
        cert = Scope(s, caller()).certificate(serial)
        return {**cert_dict(cert, svc.clock.now()),
                "organization": issued_organization(cert)}  # as of issuance (versions)


@bp.post("/certificates/<serial>/revoke")
def revoke_certificate(serial: str):
    """Raises a `revoke` request (two-person rule): 202 with the request."""
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        cert = Scope(s, who).certificate(serial)
        body = only_fields(json_body(), {"reason"})
        req = ra_requests.create(s, svc.clock, who, {
            "type": "revoke", "subscriber_id": cert.subscriber_id, "serial": cert.serial,
            "reason": body.get("reason")}, svc.profiles)
        return ra_requests.summary(req, svc.clock.now()), 202
