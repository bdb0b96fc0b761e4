"""Pages of RA officers and approvers: dashboard, subscribers, registration, requests, queue."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select

from ca.errors import CAError, InvalidInput
from ca.ra import approval
from ca.ra import requests as ra_requests
from ca.csr import csr_to_pem
from ca.ra.scope import Scope
from ca.ra.subscribers import list_organizations, register
from ca.ra.users import create_user
from ca.ra_web import listing
from ca.registry import DEVICE_TYPES
from ca.revocation import REASONS
from ca.store.models import RaDomain
from ca.store.models_restore import RestoreRequest
from ra_portal import services
from ra_portal.web.common import (caller, check_csrf, error_message, int_arg, page_errors,
                                  require, status_of)

bp = Blueprint("ra_web", __name__, url_prefix="/ra", template_folder="templates")
FORM01_FIELDS = ("kind", "full_name", "date_of_birth", "id_type", "id_number", "email", "mobile",
                 "position", "organization_id", "device_type")
MAX_CSR_BYTES = 64 * 1024
REQUEST_STATES = ("submitted", "approved", "rejected", "issued", "done", "failed", "draft")

page_errors(bp)


def form01_body(form) -> dict:
    """The submitted Form 01 as the core expects it (empty optional fields left out)."""
    body = {k: form.get(k, "") for k in FORM01_FIELDS}
    body = {k: v for k, v in body.items() if v.strip()} if all(
        isinstance(v, str) for v in body.values()) else body
    if "organization_id" in body:
        raw = body["organization_id"].strip()
        if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 2**31:
            raise InvalidInput("organization_id is not a number", field="organization_id",
                               code="unknown_organization")
        body["organization_id"] = int(raw)
    return body


def read_csr(files, form) -> str | None:
    """The CSR from an uploaded file (PEM or DER) or the text area."""
    upload = files.get("csr_file")
    if upload is not None and upload.filename:
        data = upload.stream.read(MAX_CSR_BYTES + 1)
        if len(data) > MAX_CSR_BYTES:
            raise InvalidInput("the CSR file is too large", field="csr", code="csr_too_large")
        if b"-----BEGIN" in data:
            try:
                return data.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidInput("not a PEM CSR", field="csr", code="bad_csr") from None
        return csr_to_pem(data) if data else None
    text = form.get("csr_pem", "").strip()
    if len(text) > MAX_CSR_BYTES:
        raise InvalidInput("the CSR is too large", field="csr", code="csr_too_large")
    return text or None


@bp.get("/")
@require("read")
def dashboard():
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        counts = listing.counts(s, who, svc.clock.now())
        domain = s.get(RaDomain, who.domain_id) if who.domain_id else None
        dom = {"name": domain.name, "status": domain.status} if domain else None
    return render_template("ra/dashboard.html", counts=counts, domain=dom, who=who)


@bp.get("/subscribers")
@require("read")
def subscribers():
    svc = services()
    q = request.args.get("q", "")[:100]
    sort = request.args.get("sort", "name")
    sort = sort if sort in listing.SORTS else "name"
    desc = request.args.get("dir") == "desc"
    with svc.db.transaction() as s:
        page = listing.subscribers(s, caller(), q=q, sort=sort, descending=desc,
                                   page=int_arg("page", 1), per_page=25)
        rows = [{"id": x.id, "full_name": x.full_name, "id_number": x.id_number,
                 "email": x.email, "organization": x.organization.name,
                 "device_type": x.device_type} for x in page.items]
    pages = max(1, -(-page.total // page.per_page))
    return render_template("ra/subscribers.html", rows=rows, page=page, pages=pages, q=q,
                           sort=sort, desc=desc)


def _org_choices(s, who):
    return [(o.id, ("— " * (o.level - 1)) + o.name) for o in list_organizations(s, who)]


@bp.route("/subscribers/new", methods=["GET", "POST"])
@require("subscriber.write")
def subscriber_new():
    svc = services()
    who = caller()
    values, error, status = {}, None, 200
    if request.method == "POST":
        values = request.form.to_dict()
        try:
            check_csrf()
            body = form01_body(request.form)
            with svc.db.transaction() as s:
                sub = register(s, svc.clock, who, body)
                login = None
                if request.form.get("create_login"):
                    username = request.form.get("username", "").strip()
                    if not username:
                        raise InvalidInput("username is required", field="username",
                                           code="required")
                    login = create_user(s, who, username=username, role="subscriber",
                                        at=svc.clock.now(), subscriber_ref=sub.id)
                sub_id = sub.id
                secret = (login.user.username, login.password) if login else None
            flash(_("Đã đăng ký thuê bao."), "info")
            if secret:
                # Shown once to the officer who hands it over; never logged or stored in clear.
                return render_template("ra/login_created.html", sub_id=sub_id,
                                       username=secret[0], password=secret[1])
            return redirect(url_for("ra_web.subscriber_detail", subscriber_id=sub_id))
        except CAError as exc:
            error, status = error_message(exc), status_of(exc)
    with svc.db.transaction() as s:
        orgs = _org_choices(s, who)
    return render_template("ra/subscriber_new.html", orgs=orgs, values=values, error=error,
                           device_types=DEVICE_TYPES), status


@bp.get("/subscribers/<int:subscriber_id>")
@require("read")
def subscriber_detail(subscriber_id: int):
    svc = services()
    who = caller()
    now = svc.clock.now()
    with svc.db.transaction() as s:
        sub = Scope(s, who).subscriber(subscriber_id)
        info = {"id": sub.id, "full_name": sub.full_name, "id_type": sub.id_type,
                "id_number": sub.id_number, "email": sub.email, "mobile": sub.mobile,
                "position": sub.position, "organization": sub.organization.name,
                "domain": sub.domain.name, "device_type": sub.device_type,
                "date_of_birth": sub.date_of_birth, "username": sub.username}
        certs = [{"serial": c.serial, "profile": c.profile, "not_after": c.not_after,
                  "status": listing.status_of(c, now), "reason": c.revocation_reason}
                 for c in listing.certificates_of(s, who, sub.id)]
        reqs = [ra_requests.summary(r, now) for r in ra_requests.list_requests(
            s, who, clock=svc.clock, subscriber_id=sub.id, per_page=200).items]
        events = [{"at": e.at, "action": e.action, "actor": e.actor, "target": e.target}
                  for e in listing.history(s, who, sub.id)]
    return render_template("ra/subscriber_detail.html", sub=info, certs=certs, reqs=reqs,
                           events=events)


@bp.route("/subscribers/<int:subscriber_id>/requests/new", methods=["GET", "POST"])
@require("request.create")
def request_new(subscriber_id: int):
    svc = services()
    who = caller()
    now = svc.clock.now()
    error, status, values = None, 200, {}
    with svc.db.transaction() as s:
        sub = Scope(s, who).subscriber(subscriber_id)
        info = {"id": sub.id, "full_name": sub.full_name}
        certs = [c.serial for c in listing.certificates_of(s, who, sub.id)
                 if listing.status_of(c, now) == "valid"]
    if request.method == "POST":
        values = request.form.to_dict()
        try:
            check_csrf()
            kind = request.form.get("type", "")
            body = {"type": kind, "subscriber_id": subscriber_id}
            if kind in ("issue", "renew", "change"):
                body["csr_pem"] = read_csr(request.files, request.form)
                if kind == "issue" and request.form.get("profile"):
                    body["profile"] = request.form["profile"]
            if kind in ("renew", "change", "revoke"):
                body["serial"] = request.form.get("serial") or None
            if kind in ("revoke", "change") and request.form.get("reason"):
                body["reason"] = request.form["reason"]
            if kind == "revoke" and not request.form.get("reason"):
                raise InvalidInput("reason is required", field="reason", code="required")
            body = {k: v for k, v in body.items() if v is not None}
            with svc.db.transaction() as s:
                if kind == "renew" and not body.get("csr_pem") and body.get("serial"):
                    body["csr_pem"] = listing.previous_csr(s, who, body["serial"])  # same key
                    body = {k: v for k, v in body.items() if v is not None}
                req = ra_requests.create(s, svc.clock, who, body, svc.profiles)
                req_id = req.id
            flash(_("Đã gửi yêu cầu số %(id)s.", id=req_id), "info")
            return redirect(url_for("ra_web.request_detail", request_id=req_id))
        except CAError as exc:
            error, status = error_message(exc), status_of(exc)
    profiles = [p for p, v in svc.profiles.items()
                if v.category == "subscriber" and not v.dns_in_san]
    return render_template("ra/request_new.html", sub=info, certs=certs, profiles=profiles,
                           reasons=list(REASONS), error=error, values=values), status


def can_approve(who, r: dict) -> bool:
    """The two-person rule as the page shows it (the service checks it again): never one's
    own request, and only an approval slot that is still empty. A restore request can be
    approved only once the holder's identity check is recorded (device_web.restore_detail)."""
    if (r["type"] == "restore" and not r.get("identity_checked")) or r["state"] != "submitted" or not who.can("request.approve") \
            or who.username in (r["created_by"], r["submitted_by"]):
        return False
    if r["central_approval_required"] and who.can("request.central_approve") \
            and r["central_approved_by"] is None:
        return who.username != r["approved_by"]
    return r["approved_by"] is None


@bp.get("/requests")
@require("read")
def queue():
    svc = services()
    who = caller()
    now = svc.clock.now()
    state = request.args.get("state", "submitted")
    state = state if state in REQUEST_STATES else None
    overdue = request.args.get("overdue") == "1"
    with svc.db.transaction() as s:
        page = ra_requests.list_requests(s, who, clock=svc.clock, state=state, overdue=overdue,
                                         page=int_arg("page", 1), per_page=50)
        rows = []
        for r in page.items:
            d = ra_requests.summary(r, now)
            d.update(subscriber=r.subscriber.full_name, due=r.due_at,
                     can_approve=can_approve(who, d))
            rows.append(d)
    pages = max(1, -(-page.total // page.per_page))
    return render_template("ra/requests.html", rows=rows, page=page, pages=pages, state=state,
                           overdue=overdue, states=REQUEST_STATES)


@bp.get("/requests/<int:request_id>")
@require("read")
def request_detail(request_id: int):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        r = Scope(s, who).request(request_id)
        d = ra_requests.summary(r, svc.clock.now())
        if r.type == "restore":
            d["identity_checked"] = s.execute(select(RestoreRequest.identity_checked_by).where(
                RestoreRequest.request_id == r.id)).scalar_one_or_none() is not None
        d.update(subscriber=r.subscriber.full_name, due=r.due_at,
                 can_approve=can_approve(who, d))
    return render_template("ra/request_detail.html", r=d)


@bp.post("/requests/<int:request_id>/approve")
@require("request.approve")
def request_approve(request_id: int):
    svc = services()
    who = caller()
    check_csrf()
    # approve() checks the scope itself (404 outside it) and builds the issuance service only
    # when the request needs the CA.
    req = approval.approve(svc.db, svc.clock, who, request_id, svc.issuance)
    if getattr(req, "unblock_code", None):  # restore (issue 6): the one-time code, shown once
        return __import__("ra_portal.web.device_pages").web.device_pages.show_code(req)
    if req.state == "failed":
        flash(_("Yêu cầu đã được phê duyệt nhưng thực hiện không thành công."), "error")
    else:
        flash(_("Đã phê duyệt yêu cầu số %(id)s.", id=request_id), "info")
    return redirect(url_for("ra_web.request_detail", request_id=request_id))


@bp.post("/requests/<int:request_id>/reject")
@require("request.approve")
def request_reject(request_id: int):
    svc = services()
    check_csrf()
    with svc.db.transaction() as s:
        ra_requests.reject(s, svc.clock, caller(), request_id, request.form.get("note", ""))
    flash(_("Đã từ chối yêu cầu số %(id)s.", id=request_id), "info")
    return redirect(url_for("ra_web.request_detail", request_id=request_id))
