"""Central operator pages: RA domains and their delegation, CAs, profiles, the central queue."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ca.errors import InvalidInput
from ca.ra import allowances
from ca.ra import requests as ra_requests
from ca.ra_web import domains as ra_domains
from ca.registry import DEVICE_TYPES
from ca.store.models import CertificateAuthority, RaDomain
from ra_portal import services
from ra_portal.web.common import caller, check_csrf, int_arg, page_errors, require
from ra_portal.web.ra_pages import can_approve

bp = Blueprint("central_web", __name__, url_prefix="/central", template_folder="templates")

page_errors(bp)


@bp.get("/domains")
@require("read", central=True)
def domains():
    svc = services()
    with svc.db.transaction() as s:
        rows = ra_domains.overview(s, caller())
        for row in rows:  # what each domain may request (ca/ra/allowances.py)
            row["allowance"] = allowances.get(s, row["id"], svc.profiles)
    profiles = [(p.name, p.central_approval) for p in svc.profiles.values()
                if p.category == "subscriber"]
    return render_template("central/domains.html", rows=rows, profiles=profiles,
                           device_types=DEVICE_TYPES,
                           allowable=allowances.subscriber_profiles(svc.profiles))


# --- per-domain allowances: profiles and device types a domain may request ---
ALLOWANCE_MESSAGES = {
    "profiles": _l("Trường «Mẫu chứng thư»: có mẫu chứng thư không hợp lệ."),
    "device_types": _l("Trường «Loại thiết bị»: có loại thiết bị không hợp lệ."),
}


@bp.post("/domains/<int:domain_id>/allowance")
@require("request.central_approve", central=True)
def domain_allowance(domain_id: int):
    svc = services()
    check_csrf()
    try:
        with svc.db.transaction() as s:
            allowances.set_allowance(s, svc.clock, caller(), domain_id,
                                     request.form.getlist("profile"),
                                     request.form.getlist("device_type"), svc.profiles)
            name = s.get(RaDomain, domain_id).name
    except InvalidInput as exc:
        msg = ALLOWANCE_MESSAGES.get(exc.field or "", _l("Giá trị không hợp lệ."))
        return render_template("error.html", message=str(msg)), 400
    flash(_("Đã cập nhật mẫu chứng thư và loại thiết bị được phép của %(name)s.", name=name),
          "info")
    return redirect(url_for("central_web.domains"))
# --- end allowances ---


@bp.post("/domains/<int:domain_id>/<any(suspend, resume):action>")
@require("request.central_approve", central=True)
def domain_status(domain_id: int, action: str):
    svc = services()
    check_csrf()
    with svc.db.transaction() as s:
        dom = ra_domains.set_status(s, svc.clock, caller(), domain_id,
                                    "suspended" if action == "suspend" else "active")
        name = dom.name
    flash(_("Đã tạm dừng phân cấp của %(name)s.", name=name) if action == "suspend"
          else _("Đã khôi phục phân cấp của %(name)s.", name=name), "info")
    return redirect(url_for("central_web.domains"))


def _key_state(svc, ca) -> str:
    """Whether the CA's private key answers in the HSM (never raises)."""
    try:
        attrs = svc.keys.attributes(bytes.fromhex(ca.key_id))
        flags = ", ".join(f"{k}={'có' if v else 'không'}" for k, v in sorted(attrs.items()))
        return _("có trong HSM") + f" ({flags})"
    except Exception as exc:  # the page must render even when the HSM is down
        return _("không truy cập được (%(err)s)", err=type(exc).__name__)


@bp.get("/cas")
@require("read", central=True)
def cas():
    svc = services()
    with svc.db.transaction() as s:
        items = s.execute(select(CertificateAuthority).order_by(CertificateAuthority.id)).scalars().all()
        rows = [{"name": c.name, "subject": c.subject, "serial": c.serial, "status": c.status,
                 "key": f"{c.key_type.upper()} {c.key_spec}", "label": c.key_label,
                 "scheme": c.signature_scheme, "not_before": c.not_before,
                 "not_after": c.not_after, "parent": c.parent.name if c.parent else "",
                 "key_state": _key_state(svc, c) if c.status == "active" else "—"}
                for c in items]
    return render_template("central/cas.html", rows=rows)


@bp.get("/profiles")
@require("read", central=True)
def profiles():
    rows = [{"name": p.name, "category": p.category, "subject": p.subject,
             "days": p.max_validity_days, "central": p.central_approval,
             "keys": ", ".join(f"{k} {'/'.join(v)}" for k, v in p.key_types.items())}
            for p in services().profiles.values()]
    return render_template("central/profiles.html", rows=rows)


@bp.get("/queue")
@require("read", central=True)
def queue():
    svc = services()
    who = caller()
    now = svc.clock.now()
    with svc.db.transaction() as s:
        central = ra_requests.list_requests(s, who, clock=svc.clock, needs_central=True,
                                            page=int_arg("page", 1), per_page=100)
        overdue = ra_requests.list_requests(s, who, clock=svc.clock, overdue=True, per_page=100)

        def rows(page):
            out = []
            for r in page.items:
                d = ra_requests.summary(r, now)
                d.update(subscriber=r.subscriber.full_name, can_approve=can_approve(who, d))
                out.append(d)
            return out
        central_rows, overdue_rows = rows(central), rows(overdue)
    return render_template("central/queue.html", central=central_rows, overdue=overdue_rows)


# --- users' e-mail for notices (docs/notices.md) ---
@bp.get("/users")
@require("user.grant", central=True)
def users():
    from ca.store.models_ra import RaUser
    svc = services()
    with svc.db.transaction() as s:
        rows = [{"id": u.id, "username": u.username, "role": u.role, "email": u.email or "",
                 "domain": u.domain.name if u.domain else "—"}
                for u in s.execute(select(RaUser).where(RaUser.role != "subscriber")
                                   .order_by(RaUser.domain_id, RaUser.role, RaUser.username))
                .scalars()]
    return render_template("central/users.html", rows=rows)


@bp.post("/users/email")
@require("user.grant", central=True)
def user_email():
    from ca.ra.users import set_email
    from ca.store.models_ra import RaUser
    svc = services()
    check_csrf()
    user_id = request.form.get("user_id", "")
    with svc.db.transaction() as s:
        user = s.get(RaUser, int(user_id)) if user_id.isdigit() and len(user_id) < 10 else None
        if user is None or user.role == "subscriber":
            return render_template("error.html", message=_("Không có người dùng này.")), 404
        set_email(s, user, request.form.get("email", ""), actor=caller().actor,
                  at=svc.clock.now())
        name = user.username
    flash(_("Đã cập nhật địa chỉ thư điện tử của %(name)s.", name=name), "info")
    return redirect(url_for("central_web.users"))
# --- end users' e-mail ---
