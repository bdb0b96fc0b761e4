"""Pages for transfers of staff (within and between provinces), the subscriber's history
timeline, and organisation move/merge. Thin: ca.ra.transfers and ca.ra.organizations decide."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ca.errors import CAError, InvalidInput
from ca.ra import organizations as ra_orgs
from ca.ra import transfers as ra_transfers
from ca.ra.scope import Scope
from ca.ra.subscribers import list_organizations
from ca.store.models import RaDomain
from ra_portal import services
from ra_portal.web.common import (CODE_MESSAGES, FIELD_LABELS, caller, check_csrf,
                                  error_message, page_errors, require, status_of)

bp = Blueprint("transfer_web", __name__, url_prefix="/ra", template_folder="templates")
page_errors(bp)

# The Vietnamese of the codes this area adds (the shared tables are extended, not edited).
CODE_MESSAGES.update({
    "transfer_pending": _l("thuê bao đang có một đề nghị chuyển sang đơn vị RA khác chờ tiếp "
                           "nhận; hãy rút đề nghị đó trước."),
    "domain_unavailable": _l("đơn vị RA nhận không còn hoạt động (đã sáp nhập hoặc đang tạm "
                             "dừng phân cấp)."),
    "not_destination": _l("chỉ cán bộ của đơn vị RA nhận mới được tiếp nhận hoặc từ chối."),
    "not_source": _l("chỉ đơn vị RA chuyển đi mới được rút đề nghị."),
    "own_release": _l("người đã chuyển đi không được tự tiếp nhận (cần hai bên khác nhau)."),
    "transfer_accepted": _l("đề nghị chuyển công tác này đã được tiếp nhận."),
    "transfer_withdrawn": _l("đề nghị chuyển công tác này đã được rút lại."),
    "transfer_refused": _l("đề nghị chuyển công tác này đã bị từ chối."),
    "not_a_person": _l("chỉ chuyển cá nhân sang đơn vị RA khác; chứng thư cơ quan, thiết bị "
                       "đi theo việc sắp xếp tổ chức."),
    "stale": _l("thuê bao không còn thuộc đơn vị RA đã chuyển đi."),
    "cycle": _l("không thể đặt một cơ quan vào chính nó hoặc đơn vị cấp dưới của nó."),
    "cross_domain": _l("cơ quan phải thuộc cùng đơn vị RA."),
    "too_deep": _l("cơ quan chỉ được lồng tối đa 4 cấp."),
})
FIELD_LABELS.update({"parent_id": _l("Cơ quan cấp trên mới"),
                     "into_id": _l("Sáp nhập vào cơ quan"), "transfer_id": _l("Đề nghị"),
                     "domain_id": _l("Tỉnh/Thành phố, bộ, ngành"), "note": _l("Ghi chú")})
STATE_NAMES = {"released": _l("chờ tiếp nhận"), "accepted": _l("đã tiếp nhận"),
               "withdrawn": _l("đã rút"), "refused": _l("bị từ chối")}


def _form_int(name: str, required: bool = True) -> int | None:
    raw = (request.form.get(name) or "").strip()
    if not raw:
        if required:
            raise InvalidInput(f"{name} is required", field=name, code="required")
        return None
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 2**31:
        raise InvalidInput(f"{name} is not a number", field=name, code="unknown_organization")
    return int(raw)


def _arg_int(name: str) -> int | None:
    raw = request.args.get(name, "")
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 2**31 else None


# --- transfer form ------------------------------------------------------------------------
@bp.route("/subscribers/<int:subscriber_id>/transfer", methods=["GET", "POST"])
@require("subscriber.write")
def transfer_form(subscriber_id: int):
    svc = services()
    who = caller()
    error, status = None, 200
    if request.method == "POST":
        try:
            check_csrf()
            org_id = _form_int("organization_id")
            with svc.db.transaction() as s:
                res = ra_transfers.transfer(s, svc.clock, who, subscriber_id, org_id,
                                            svc.profiles, reason=request.form.get("reason"))
                if isinstance(res, ra_transfers.Moved):
                    n, skipped = len(res.change_requests), len(res.not_changed)
                    moved = True
                else:
                    moved, tid = False, res.id
            if moved:
                flash(_("Đã chuyển thuê bao sang đơn vị mới; đã lập %(n)s yêu cầu thay đổi "
                        "thông tin chờ phê duyệt.", n=n), "info")
                if skipped:
                    flash(_("%(n)s chứng thư chưa lập được yêu cầu thay đổi; xem lịch sử.",
                            n=skipped), "error")
                return redirect(url_for("ra_web.subscriber_detail",
                                        subscriber_id=subscriber_id))
            flash(_("Đã gửi đề nghị chuyển công tác số %(id)s; thuê bao vẫn thuộc đơn vị cho "
                    "đến khi bên nhận tiếp nhận.", id=tid), "info")
            return redirect(url_for("transfer_web.transfers"))
        except CAError as exc:
            error, status = error_message(exc), status_of(exc)
    domain_choice = _arg_int("domain_id") or _form_int_or_none("domain_id")
    with svc.db.transaction() as s:
        sub = Scope(s, who).subscriber(subscriber_id)
        info = {"id": sub.id, "full_name": sub.full_name, "organization": sub.organization.name,
                "domain": sub.domain.name, "organization_id": sub.organization_id}
        own = [(o.id, ("— " * (o.level - 1)) + o.name) for o in list_organizations(s, who)
               if o.active and o.domain_id == sub.domain_id]
        domains = [(d.id, d.name) for d in ra_transfers.other_domains(s, who)
                   if d.id != sub.domain_id]
        other, other_name = [], None
        if domain_choice and domain_choice != sub.domain_id:
            try:
                other = [(o.id, ("— " * (o.level - 1)) + o.name)
                         for o in ra_transfers.destination_units(s, who, domain_choice)]
                other_name = s.get(RaDomain, domain_choice).name
            except CAError as exc:
                error, status = error_message(exc), status_of(exc)
        pending = ra_transfers.open_release(s, sub.id)
        pending = pending.id if pending else None
    return render_template("transfers/form.html", sub=info, own=own, domains=domains,
                           other=other, other_name=other_name, domain_choice=domain_choice,
                           pending=pending, error=error,
                           values=request.form.to_dict()), status


def _form_int_or_none(name: str) -> int | None:
    raw = (request.form.get(name) or "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 2**31 else None


# --- incoming and outgoing releases -------------------------------------------------------
@bp.get("/transfers")
@require("read")
def transfers():
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        rows = [ra_transfers.transfer_dict(s, t, side)
                for t, side in ra_transfers.list_transfers(s, who)]
    incoming = [r for r in rows if r["direction"] in ("incoming", "central")]
    outgoing = [r for r in rows if r["direction"] in ("outgoing", "central")]
    return render_template("transfers/list.html", incoming=incoming, outgoing=outgoing,
                           state_names=STATE_NAMES, who=who)


def _decide(transfer_id: int, action: str):
    svc = services()
    who = caller()
    check_csrf()
    with svc.db.transaction() as s:
        ra_transfers.get_transfer(s, who, transfer_id)  # 404 before anything else
        note = request.form.get("note") or None
        if action == "accept":
            org = _form_int("organization_id", required=False)
            res = ra_transfers.accept(s, svc.clock, who, transfer_id, svc.profiles,
                                      organization_id=org)
            n, sub_id = len(res.change_requests), res.transfer.subscriber_id
        elif action == "refuse":
            ra_transfers.refuse(s, svc.clock, who, transfer_id, note)
        else:
            ra_transfers.withdraw(s, svc.clock, who, transfer_id, note)
    if action == "accept":
        flash(_("Đã tiếp nhận thuê bao; đã lập %(n)s yêu cầu thay đổi thông tin chờ phê "
                "duyệt.", n=n), "info")
        return redirect(url_for("ra_web.subscriber_detail", subscriber_id=sub_id))
    flash(_("Đã từ chối đề nghị.") if action == "refuse" else _("Đã rút đề nghị."), "info")
    return redirect(url_for("transfer_web.transfers"))


@bp.post("/transfers/<int:transfer_id>/accept")
@require("subscriber.write")
def transfer_accept(transfer_id: int):
    return _decide(transfer_id, "accept")


@bp.post("/transfers/<int:transfer_id>/refuse")
@require("subscriber.write")
def transfer_refuse(transfer_id: int):
    return _decide(transfer_id, "refuse")


@bp.post("/transfers/<int:transfer_id>/withdraw")
@require("subscriber.write")
def transfer_withdraw(transfer_id: int):
    return _decide(transfer_id, "withdraw")


# --- the subscriber's history -------------------------------------------------------------
@bp.get("/subscribers/<int:subscriber_id>/timeline")
@require("read")
def timeline(subscriber_id: int):
    svc = services()
    who = caller()
    now = svc.clock.now()
    with svc.db.transaction() as s:
        h = ra_transfers.history(s, who, subscriber_id)
        sub = h["subscriber"]
        from ca.ra.scope import within
        certs = [{"serial": c.serial, "profile": c.profile, "subject": c.subject,
                  "issued_at": c.issued_at, "not_after": c.not_after,
                  "revoked": c.revoked_at is not None and within(h["periods"], c.revoked_at),
                  "reason": c.revocation_reason if within(h["periods"], c.revoked_at) else None}
                 for c in h["certificates"]]
        from ca.ra import requests as ra_requests
        reqs = [ra_requests.summary(r, now) for r in h["requests"]]
        events = [{"at": e.at, "action": e.action, "actor": e.actor, "target": e.target}
                  for e in h["events"]]
        info = {"id": sub.id, "full_name": sub.full_name,
                "organization": sub.organization.name if h["current"] else None}
    return render_template("transfers/timeline.html", sub=info, current=h["current"],
                           periods=h["periods"], placements=h["placements"], certs=certs,
                           reqs=reqs, events=events)


# --- organisations: list, detail with move and merge (issue 4) ----------------------------
@bp.get("/organizations")
@require("read")
def organizations():
    svc = services()
    with svc.db.transaction() as s:
        rows = [{"id": o.id, "name": o.name, "level": o.level, "kind": o.kind,
                 "active": o.active, "domain": o.domain.name}
                for o in list_organizations(s, caller())]
    return render_template("transfers/organizations.html", rows=rows)


def _organization_page(organization_id: int, error: str | None = None, status: int = 200):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        org = Scope(s, who).organization(organization_id)
        info = {"id": org.id, "name": org.name, "active": org.active, "level": org.level,
                "kind": org.kind, "domain": org.domain.name,
                "parent": org.parent.name if org.parent else None}
        versions = [ra_orgs.version_dict(v) for v in ra_orgs.history(s, who, org.id)]
        others = [(o.id, ("— " * (o.level - 1)) + o.name) for o in list_organizations(s, who)
                  if o.active and o.id != org.id and o.domain_id == org.domain_id]
    return render_template("transfers/organization.html", org=info, versions=versions,
                           others=others, error=error,
                           values=request.form.to_dict()), status


@bp.get("/organizations/<int:organization_id>")
@require("read")
def organization(organization_id: int):
    return _organization_page(organization_id)


def _org_action(organization_id: int, action: str):
    svc = services()
    who = caller()
    try:
        check_csrf()
        with svc.db.transaction() as s:
            Scope(s, who).organization(organization_id)  # 404 before anything else
            reason = request.form.get("reason")
            if action == "move":
                parent = _form_int("parent_id", required=False)
                ra_orgs.move(s, who, organization_id, parent, reason, clock=svc.clock)
            else:
                into = _form_int("into_id")
                try:
                    Scope(s, who).organization(into)
                except CAError:
                    raise InvalidInput(f"unknown organisation {into}", field="into_id",
                                       code="unknown_organization") from None
                ra_orgs.merge(s, who, [organization_id], reason=reason, clock=svc.clock,
                              into_id=into)
    except CAError as exc:
        if exc.code == "not_found":
            raise
        return _organization_page(organization_id, error_message(exc), status_of(exc))
    flash(_("Đã chuyển cơ quan sang cơ quan cấp trên mới.") if action == "move"
          else _("Đã sáp nhập cơ quan."), "info")
    return redirect(url_for("transfer_web.organization", organization_id=organization_id))


@bp.post("/organizations/<int:organization_id>/move")
@require("subscriber.write")
def organization_move(organization_id: int):
    return _org_action(organization_id, "move")


@bp.post("/organizations/<int:organization_id>/merge")
@require("subscriber.write")
def organization_merge(organization_id: int):
    return _org_action(organization_id, "merge")

