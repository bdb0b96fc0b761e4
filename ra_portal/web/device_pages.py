"""Key-device pages: staff devices, restore, lost token; restore queue, approval, device history."""
from __future__ import annotations

from flask import (Blueprint, flash, make_response, redirect, render_template, request,
                   url_for)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ca.errors import CAError, NotFound
from ca.ra import approval
from ca.ra import restore
from ca.ra.scope import Scope
from ca.store.models_restore import RestoreRequest
from ca.store.models_tokens import KeyDevice
from ca.tokens import remote_pin
from ca.tokens.registry import REMOTE_TYPES
from ra_portal import services
from ra_portal.web.common import caller, check_csrf, error_message, page_errors, require, status_of

bp = Blueprint("device_web", __name__, template_folder="templates")
page_errors(bp)

DEVICE_STATES = {"new": _l("mới"), "initialised": _l("đã khởi tạo"), "issued": _l("đang dùng"),
                 "locked": _l("bị khóa"), "restored": _l("đã khôi phục"),
                 "retired": _l("thôi sử dụng"), "lost": _l("bị mất"),
                 "destroyed": _l("bị hỏng, hủy")}
METHODS = {"cccd_in_person": _l("Đối chiếu CCCD trực tiếp"),
           "video_call": _l("Gọi video, đối chiếu CCCD"),
           "agency_letter": _l("Văn bản xác nhận của cơ quan quản lý")}
MESSAGES = {
    "identity_check_required": _l("Chưa ghi nhận việc kiểm tra danh tính người giữ thiết bị "
                                  "(ai, cách nào, khi nào); chưa thể phê duyệt."),
    "unknown_device": _l("Không tìm thấy thiết bị lưu khóa này của thuê bao."),
    "device_not_in_service": _l("Thiết bị không ở trạng thái đang sử dụng nên không thể khôi "
                                "phục."),
    "duplicate_request": _l("Đã có một yêu cầu khôi phục đang xử lý cho thiết bị này."),
    "two_person_rule": _l("Người phê duyệt phải khác người lập yêu cầu và khác người phê duyệt "
                          "thứ nhất."),
    "invalid_date": _l("Thời điểm kiểm tra danh tính không hợp lệ (trong 30 ngày qua)."),
    "pin_policy": _l("Mã PIN mới phải gồm 6–16 chữ số, không lặp một chữ số, không theo dãy "
                     "liên tiếp."),
    "pin_mismatch": _l("Hai lần nhập mã PIN mới không khớp."),
    "unblock_code_format": _l("Mã mở khóa gồm 20 ký tự (XXXX-XXXX-XXXX-XXXX-XXXX)."),
    "unblock_code_wrong": _l("Mã mở khóa không đúng."),
    "unblock_code_used": _l("Mã mở khóa đã được sử dụng."),
    "unblock_code_expired": _l("Mã mở khóa đã hết hạn; đề nghị đơn vị RA cấp mã mới."),
    "unblock_code_withdrawn": _l("Mã mở khóa đã bị thu hồi; đề nghị đơn vị RA cấp mã mới."),
    "unblock_code_other_device": _l("Mã mở khóa được cấp cho thiết bị khác."),
    "unblock_rate_limited": _l("Nhập sai quá nhiều lần; vui lòng chờ 15 phút và đề nghị đơn vị "
                               "RA cấp mã mới."),
}


def message(exc: CAError) -> str:
    text = MESSAGES.get(exc.code)
    if text is None and exc.field in ("new_pin", "pin"):
        text = MESSAGES["pin_policy"]
    return str(text) if text is not None else error_message(exc)


@bp.app_template_global()
def device_state_name(state: str) -> str:
    return str(DEVICE_STATES.get(state, state))


def _fail(exc: CAError, template: str = "error.html", **ctx):
    return render_template(template, message=message(exc), **ctx), status_of(exc)


def show_code(req):
    """The one-time unblock code, shown once (the page is not cached; the code is not stored)."""
    resp = make_response(render_template("devices/code.html", req=req, code=req.unblock_code,
                                         expires_at=req.unblock_expires_at))
    resp.headers["Cache-Control"] = "no-store"
    return resp


# -- staff ------------------------------------------------------------------------------------
@bp.get("/me/devices")
@require("self")
def my_devices():
    svc, who = services(), caller()
    if who.subscriber_id is None:
        return redirect(url_for("device_web.restore_queue"))
    with svc.db.transaction() as s:
        devices = s.execute(select(KeyDevice).where(
            KeyDevice.holder_id == who.subscriber_id, restore.scoped_devices(s, who))
            .order_by(KeyDevice.id)).scalars().all()
        reqs = [r for r in restore.restore_queue(s, who, svc.clock.now(), include_closed=True)
                if r["subscriber_id"] == who.subscriber_id]
    return render_template("devices/mine.html", devices=devices, reqs=reqs,
                           remote_types=REMOTE_TYPES)


@bp.post("/me/devices/<int:device_id>/restore")
@require("self")
def my_restore(device_id: int):
    svc, who = services(), caller()
    with svc.db.transaction() as s:
        dev = restore.scoped_device(s, who, device_id)
        if dev.holder_id != who.subscriber_id:
            raise NotFound(f"no key device with id {device_id}", field="device_id")
    try:
        check_csrf()
        with svc.db.transaction() as s:
            req = restore.create(s, svc.clock, who, subscriber_id=who.subscriber_id,
                                 device_id=device_id, profiles=svc.profiles)
            rid = req.id
    except CAError as exc:
        return _fail(exc)
    flash(_("Đã gửi yêu cầu khôi phục thiết bị số %(id)s; đơn vị RA sẽ liên hệ để kiểm tra danh "
            "tính.", id=rid), "info")
    return redirect(url_for("device_web.my_devices"))


@bp.post("/me/devices/<int:device_id>/lost")
@require("self")
def my_lost(device_id: int):
    svc, who = services(), caller()
    with svc.db.transaction() as s:
        dev = restore.scoped_device(s, who, device_id)
        if dev.holder_id != who.subscriber_id:
            raise NotFound(f"no key device with id {device_id}", field="device_id")
    return _end(device_id, "device_web.my_devices")


def _end(dev_id: int, back: str, **back_args):
    svc, who = services(), caller()
    try:
        check_csrf()
        state = request.form.get("state", "lost")
        with svc.db.transaction() as s:
            report = restore.report_lost(s, svc.clock, who, dev_id, state=state,
                                         profiles=svc.profiles, note=request.form.get("note"))
    except CAError as exc:
        return _fail(exc)
    flash(_("Đã ghi nhận thiết bị %(state)s; %(n)s yêu cầu thu hồi chứng thư (keyCompromise) "
            "đã gửi đơn vị RA.", state=device_state_name(report.state),
            n=len(report.request_ids)), "info")
    return redirect(url_for(back, **back_args))


@bp.route("/me/devices/<int:device_id>/pin", methods=["GET", "POST"])
@require("self")
def my_pin(device_id: int):
    """Remote (RSSP/HSM) key: the holder sets a new PIN with the one-time code."""
    svc, who = services(), caller()
    with svc.db.transaction() as s:
        dev = restore.scoped_device(s, who, device_id)
        if dev.holder_id != who.subscriber_id or dev.device_type not in REMOTE_TYPES:
            raise NotFound(f"no remote key with id {device_id}", field="device_id")
        label = dev.label
    error, status = None, 200
    if request.method == "POST":
        try:
            check_csrf()
            new_pin, again = request.form.get("new_pin", ""), request.form.get("new_pin2", "")
            if new_pin != again:
                raise _Mismatch("the two new PINs differ", field="new_pin")
            remote_pin.reset_pin(svc.db, svc.clock, device_id=device_id,
                                 code=request.form.get("code", ""), new_pin=new_pin,
                                 actor=who.actor)
            flash(_("Đã đặt mã PIN mới cho khóa từ xa."), "info")
            return redirect(url_for("device_web.my_devices"))
        except CAError as exc:
            error, status = message(exc), status_of(exc)
    return render_template("devices/pin.html", label=label, error=error), status


class _Mismatch(CAError):
    code = "pin_mismatch"


# -- officers ---------------------------------------------------------------------------------
@bp.get("/ra/restore")
@require("read")
def restore_queue():
    svc, who = services(), caller()
    now = svc.clock.now()
    with svc.db.transaction() as s:
        rows = restore.restore_queue(s, who, now, include_closed=request.args.get("all") == "1")
    return render_template("devices/queue.html", rows=rows, methods=METHODS)


@bp.get("/ra/restore/<int:request_id>")
@require("read")
def restore_detail(request_id: int, error: str | None = None, status: int = 200):
    svc, who = services(), caller()
    with svc.db.transaction() as s:
        req = Scope(s, who).request(request_id)
        row = s.get(RestoreRequest, req.id)
        if row is None:
            raise NotFound(f"no restore request with id {request_id}", field="request_id")
        dev = s.get(KeyDevice, row.device_id)
        history = restore.device_history(s, who, dev.id)
    can_approve = (who.can("request.approve") and req.state == "submitted"
                   and who.username not in (req.created_by, req.submitted_by,
                                            row.first_approved_by))
    return render_template("devices/restore.html", req=req, row=row, dev=dev, history=history,
                           methods=METHODS, can_approve=can_approve,
                           approvers=restore.approvers_required(), error=error), status


@bp.post("/ra/restore/<int:request_id>/identity")
@require("read")
def restore_identity(request_id: int):
    svc, who = services(), caller()
    with svc.db.transaction() as s:
        Scope(s, who).request(request_id)
    try:
        check_csrf()
        with svc.db.transaction() as s:
            restore.record_identity_check(
                s, svc.clock, who, request_id, method=request.form.get("method"),
                checked_at=request.form.get("checked_at"), note=request.form.get("note"))
    except CAError as exc:
        return restore_detail(request_id, error=message(exc), status=status_of(exc))
    flash(_("Đã ghi nhận việc kiểm tra danh tính."), "info")
    return redirect(url_for("device_web.restore_detail", request_id=request_id))


@bp.post("/ra/restore/<int:request_id>/approve")
@require("request.approve")
def restore_approve(request_id: int):
    svc, who = services(), caller()
    with svc.db.transaction() as s:
        Scope(s, who).request(request_id)
    try:
        check_csrf()
        req = approval.approve(svc.db, svc.clock, who, request_id, None)
    except CAError as exc:
        return restore_detail(request_id, error=message(exc), status=status_of(exc))
    if getattr(req, "unblock_code", None):
        return show_code(req)
    if req.state == "failed":
        flash(_("Yêu cầu đã được phê duyệt nhưng thực hiện không thành công."), "error")
    else:
        flash(_("Đã ghi nhận phê duyệt thứ nhất; cần thêm một người phê duyệt khác."), "info")
    return redirect(url_for("device_web.restore_detail", request_id=request_id))


@bp.get("/ra/devices/<int:device_id>")
@require("read")
def device_detail(device_id: int):
    svc, who = services(), caller()
    with svc.db.transaction() as s:
        dev = restore.scoped_device(s, who, device_id)
        history = restore.device_history(s, who, device_id)
        holder = dev.holder.full_name
    return render_template("devices/detail.html", dev=dev, holder=holder, history=history,
                           who=who)


@bp.post("/ra/devices/<int:device_id>/restore")
@require("request.create")
def device_restore(device_id: int):
    svc, who = services(), caller()
    with svc.db.transaction() as s:
        holder = restore.scoped_device(s, who, device_id).holder_id
    try:
        check_csrf()
        with svc.db.transaction() as s:
            rid = restore.create(s, svc.clock, who, subscriber_id=holder, device_id=device_id,
                                 profiles=svc.profiles).id
    except CAError as exc:
        return _fail(exc)
    return redirect(url_for("device_web.restore_detail", request_id=rid))


@bp.post("/ra/devices/<int:device_id>/end")
@require("request.create")
def device_end(device_id: int):
    svc, who = services(), caller()
    with svc.db.transaction() as s:
        restore.scoped_device(s, who, device_id)
    return _end(device_id, "device_web.device_detail", device_id=device_id)

