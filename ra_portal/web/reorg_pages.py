"""Reorganisation pages: plan list, plan detail with the dry run, approval, progress, failures."""
from __future__ import annotations

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ca.errors import CAError
from ca.reorg import csvmap, executor
from ca.reorg.dryrun import dry_run
from ca.reorg.impact import domain_names
from ca.reorg.plans import approve_plan, create_plan, get_plan, items_of, list_plans
from ca.reorg.throttle import ca_sign_rate
from ra_portal import services
from ra_portal.web.common import caller, check_csrf, error_message, page_errors, require, status_of
from ra_portal.web.svg_charts import bar_chart

bp = Blueprint("reorg_web", __name__, template_folder="templates", url_prefix="/reorg")
page_errors(bp)

STATES = {"draft": _l("bản nháp"), "approved": _l("đã phê duyệt"), "running": _l("đang chạy"),
          "paused": _l("tạm dừng"), "cancelled": _l("đã hủy"), "done": _l("hoàn thành")}
KINDS = {"merge_province": _l("Sáp nhập tỉnh"), "absorb_unit": _l("Sáp nhập vào đơn vị có sẵn"),
         "merge_units_new": _l("Hợp nhất thành đơn vị mới"), "rename": _l("Đổi tên")}
MESSAGES = {
    "two_person_rule": _l("Người phê duyệt phải khác người lập phương án (chữ ký nháy)."),
    "not_approved": _l("Phương án chưa được phê duyệt hoặc đã bị sửa sau khi phê duyệt; cần "
                       "phê duyệt lại."),
    "plan_changed": _l("Phương án đã thay đổi kể từ khi hiển thị; hãy xem lại trước khi phê "
                       "duyệt."),
    "mapped_twice": _l("Một đơn vị được sắp xếp hai lần trong phương án."),
    "cycle": _l("Phương án có vòng lặp (đơn vị sáp nhập vào chính nó hoặc vào đơn vị con)."),
    "chain": _l("Đơn vị đích cũng bị sáp nhập đi; hãy sáp nhập thẳng vào đơn vị cuối cùng."),
    "unknown_unit": _l("Không tìm thấy đơn vị hoặc tỉnh này trong phạm vi được phân cấp."),
    "central_only": _l("Chỉ cơ quan vận hành trung ương được sáp nhập tỉnh."),
    "wrong_state": _l("Phương án không ở trạng thái cho phép thao tác này."),
    "nothing_failed": _l("Không có mục nào bị lỗi."),
}


def message(exc: CAError) -> str:
    text = MESSAGES.get(exc.code)
    return f"{text} ({exc.message})" if text is not None else error_message(exc)


def _fail(exc: CAError, plan_id: int | None = None):
    if plan_id is not None and status_of(exc) != 404:
        flash(message(exc), "error")
        return redirect(url_for("reorg_web.detail", plan_id=plan_id))
    return render_template("error.html", message=message(exc)), status_of(exc)


@bp.get("/")
@require("read")
def index():
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        plans = list_plans(s, who)
        return render_template("reorg/list.html", plans=plans, states=STATES,
                               can_create=who.is_central and who.can("subscriber.write"))


@bp.post("/new-csv")
@require("subscriber.write", central=True)
def new_from_csv():
    svc = services()
    try:
        check_csrf()
        with svc.db.transaction() as s:
            items, skipped = csvmap.items_from_csv(s, csvmap.builtin_csv(),
                                                   skip_missing=bool(request.form.get("skip")))
            plan = create_plan(s, caller(), name=request.form.get("name"), items=items,
                               clock=svc.clock, reason=_("Sắp xếp đơn vị hành chính 2025"))
            plan_id = plan.id
    except CAError as exc:
        return _fail(exc)
    if skipped:
        flash(_("Bỏ qua %(n)s tỉnh cũ chưa có trong hệ thống.", n=len(skipped)), "info")
    return redirect(url_for("reorg_web.detail", plan_id=plan_id))


def _chart(figures: dict | None):
    if not figures or not figures.get("by_target"):
        return None
    rows = figures["by_target"][:40]
    return bar_chart(_("Chứng thư theo đơn vị đích"), [r["target"] for r in rows],
                     {_("thay đổi"): [r["change"] for r in rows],
                      _("thu hồi"): [r["revoke"] for r in rows]})


@bp.get("/<int:plan_id>")
@require("read")
def detail(plan_id: int):
    svc = services()
    who = caller()
    try:
        job = executor.progress(svc.db, who, plan_id, svc.clock)
    except CAError as exc:
        return _fail(exc)
    with svc.db.transaction() as s:
        plan = get_plan(s, who, plan_id)
        names = domain_names(s)
        items = items_of(s, plan.id)
        can_approve = (who.can("request.approve") and plan.state == "draft"
                       and who.username != plan.created_by
                       and (plan.domain_id is not None or who.is_central))
        return render_template("reorg/detail.html", plan=plan, items=items, names=names,
                               kinds=KINDS, states=STATES, figures=plan.dry_run,
                               chart=_chart(plan.dry_run), job=job, can_approve=can_approve,
                               can_write=who.can("subscriber.write"))


def _check_post(svc, who, plan_id: int) -> None:
    """A form post on a plan: the plan must be in scope (404 first, like a missing one), then
    the CSRF token must be right."""
    with svc.db.transaction() as s:
        get_plan(s, who, plan_id)
    check_csrf()


@bp.post("/<int:plan_id>/dry-run")
@require("read")
def do_dry_run(plan_id: int):
    svc = services()
    who = caller()
    try:
        _check_post(svc, who, plan_id)
        rate = ca_sign_rate(svc.db, svc.keys, seconds=0.3)
        with svc.db.transaction() as s:
            dry_run(s, who, plan_id, clock=svc.clock, hsm_rate=rate)
    except CAError as exc:
        return _fail(exc, plan_id)
    return redirect(url_for("reorg_web.detail", plan_id=plan_id) + "#dry-run")


@bp.post("/<int:plan_id>/approve")
@require("request.approve")
def approve(plan_id: int):
    svc = services()
    who = caller()
    try:
        _check_post(svc, who, plan_id)
        with svc.db.transaction() as s:
            approve_plan(s, who, plan_id, clock=svc.clock,
                         expected_hash=request.form.get("content_hash") or None)
    except CAError as exc:
        return _fail(exc, plan_id)
    flash(_("Đã phê duyệt phương án %(id)s.", id=plan_id), "info")
    return redirect(url_for("reorg_web.detail", plan_id=plan_id))


CONTROLS = {"start": executor.start, "pause": executor.pause, "cancel": executor.cancel,
            "retry": executor.retry_failed}


@bp.post("/<int:plan_id>/<any(start, pause, cancel, retry):action>")
@require("subscriber.write")
def control(plan_id: int, action: str):
    svc = services()
    who = caller()
    try:
        _check_post(svc, who, plan_id)
        plan = CONTROLS[action](svc.db, who, plan_id, svc.clock)
    except CAError as exc:
        return _fail(exc, plan_id)
    flash(_("Phương án %(id)s: %(state)s.", id=plan_id, state=str(STATES[plan.state])), "info")
    target = "reorg_web.progress" if action in ("start", "retry") else "reorg_web.detail"
    return redirect(url_for(target, plan_id=plan_id))


@bp.get("/<int:plan_id>/progress")
@require("read")
def progress(plan_id: int):
    svc = services()
    who = caller()
    try:
        info = executor.progress(svc.db, who, plan_id, svc.clock)
        with svc.db.transaction() as s:
            plan = get_plan(s, who, plan_id)
    except CAError as exc:
        return _fail(exc)
    return render_template("reorg/progress.html", plan=plan, info=info, states=STATES,
                           can_write=who.can("subscriber.write"))


@bp.get("/<int:plan_id>/progress.json")
@require("read")
def progress_json(plan_id: int):
    svc = services()
    try:
        info = executor.progress(svc.db, caller(), plan_id, svc.clock)
    except CAError as exc:
        return jsonify({"error": {"code": exc.code, "message": message(exc)}}), status_of(exc)
    info["state_label"] = str(STATES.get(info["state"], info["state"]))
    resp = jsonify(info)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/<int:plan_id>/failures")
@require("read")
def failures(plan_id: int):
    svc = services()
    who = caller()
    try:
        rows = executor.failures(svc.db, who, plan_id)
        with svc.db.transaction() as s:
            plan = get_plan(s, who, plan_id)
    except CAError as exc:
        return _fail(exc)
    return render_template("reorg/failures.html", plan=plan, rows=rows, states=STATES,
                           can_write=who.can("subscriber.write"))
