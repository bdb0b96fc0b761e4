"""Staff self-service: my certificates and requests, downloads, renewal, lost-token report."""
from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select

from ca.errors import CAError, InvalidInput
from ca.ra import requests as ra_requests
from ca.ra.scope import Scope
from ca.ra_web import download as dl
from ca.ra_web import listing
from ca.store.models_ra import RaRequest
from ra_portal import services
from ra_portal.web.common import (caller, check_csrf, error_message, page_errors, require,
                                  status_of)
from ra_portal.web.ra_pages import read_csr

bp = Blueprint("me_web", __name__, url_prefix="/me", template_folder="templates")

page_errors(bp)


@bp.get("/")
@require("self")
def home():
    svc = services()
    who = caller()
    now = svc.clock.now()
    if who.subscriber_id is None:
        return redirect(url_for("ra_web.dashboard"))
    with svc.db.transaction() as s:
        sub = Scope(s, who).subscriber(who.subscriber_id) if who.can("read") else None
        certs = [{"serial": c.serial, "profile": c.profile, "not_after": c.not_after,
                  "status": listing.status_of(c, now), "reason": c.revocation_reason}
                 for c in listing.my_certificates(s, who)]
        reqs = [ra_requests.summary(r, now) for r in s.execute(select(RaRequest).where(
            Scope(s, who).requests(), RaRequest.subscriber_id == who.subscriber_id)
            .order_by(RaRequest.id.desc()).limit(100)).scalars()]
    return render_template("me/home.html", certs=certs, reqs=reqs, sub=sub)


@bp.get("/certificates/<serial>/<fmt>")
@require("self")
def download(serial: str, fmt: str):
    """Anyone may fetch a certificate inside their scope (staff: only their own)."""
    svc = services()
    if fmt not in dl.FORMATS:
        raise InvalidInput("unknown format", field="format")
    with svc.db.transaction() as s:
        body, media, name = dl.render(Scope(s, caller()).certificate(serial), fmt)
    return Response(body, mimetype=media,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.route("/certificates/<serial>/renew", methods=["GET", "POST"])
@require("self")
def renew(serial: str):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        cert = Scope(s, who).certificate(serial)
        hexserial = cert.serial
    error, status = None, 200
    if request.method == "POST":
        try:
            check_csrf()
            csr = read_csr(request.files, request.form)
            with svc.db.transaction() as s:
                csr = csr or listing.previous_csr(s, who, hexserial)
                if not csr:
                    raise InvalidInput("csr is required", field="csr", code="required")
                req = ra_requests.create(s, svc.clock, who, {
                    "type": "renew", "subscriber_id": who.subscriber_id, "serial": hexserial,
                    "csr_pem": csr}, svc.profiles)
                req_id = req.id
            flash(_("Đã gửi yêu cầu gia hạn số %(id)s.", id=req_id), "info")
            return redirect(url_for("me_web.home"))
        except CAError as exc:
            error, status = error_message(exc), status_of(exc)
    return render_template("me/renew.html", serial=hexserial, error=error), status


@bp.post("/certificates/<serial>/lost")
@require("self")
def lost(serial: str):
    """Report a lost or compromised token: a revocation request (keyCompromise) for the RA."""
    svc = services()
    who = caller()
    check_csrf()
    with svc.db.transaction() as s:
        cert = Scope(s, who).certificate(serial)
        req = ra_requests.create(s, svc.clock, who, {
            "type": "revoke", "subscriber_id": cert.subscriber_id, "serial": cert.serial,
            "reason": "keyCompromise"}, svc.profiles)
        req_id = req.id
    flash(_("Đã báo mất thiết bị; yêu cầu thu hồi số %(id)s đã gửi đơn vị RA.", id=req_id),
          "info")
    return redirect(url_for("me_web.home"))
