"""Shared parts of the portal pages: the caller, role guards, CSRF, errors as Vietnamese text."""
from __future__ import annotations

import datetime as dt
import functools
from urllib.parse import urlsplit

from flask import abort, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm

from ca.errors import (CAError, Conflict, HsmUnavailable, InvalidInput, LintFailed, NotFound,
                       PermissionDenied, PolicyViolation)
from ca.ra.roles import Caller
from ca.ra.workdays import VN_TZ

STATUS = [(NotFound, 404), (PermissionDenied, 403), (Conflict, 409), (LintFailed, 422),
          (PolicyViolation, 422), (InvalidInput, 400), (HsmUnavailable, 503)]

# The names of the fields, as the forms show them.
FIELD_LABELS = {
    "full_name": _l("Họ và tên"), "date_of_birth": _l("Ngày sinh"),
    "id_type": _l("Loại giấy tờ"), "id_number": _l("Số CCCD/CMND/Hộ chiếu"),
    "id_issued_on": _l("Ngày cấp"), "id_issued_at": _l("Nơi cấp"),
    "email": _l("Thư điện tử công vụ"), "mobile": _l("Số điện thoại di động"),
    "position": _l("Chức vụ"), "organization_id": _l("Cơ quan, đơn vị"),
    "organization": _l("Cơ quan, đơn vị"), "device_type": _l("Loại thiết bị lưu khóa"),
    "kind": _l("Loại thuê bao"), "type": _l("Loại yêu cầu"), "profile": _l("Mẫu chứng thư"),
    "csr_pem": _l("Yêu cầu ký chứng thư (CSR)"), "csr": _l("Yêu cầu ký chứng thư (CSR)"),
    "serial": _l("Chứng thư liên quan"), "reason": _l("Lý do"),
    "validity_days": _l("Thời hạn (ngày)"), "subscriber_id": _l("Thuê bao"),
    "username": _l("Tên đăng nhập"), "file": _l("Tệp dữ liệu"), "province": _l("Tỉnh/Thành phố"),
    "old_serial": _l("Số hiệu chứng thư cũ"), "request_id": _l("Yêu cầu"),
    "note": _l("Ghi chú"), "org1": _l("Cơ quan cấp 1"), "org2": _l("Cơ quan cấp 2"),
    "org3": _l("Cơ quan cấp 3"), "org4": _l("Cơ quan cấp 4"), "unit": _l("Đơn vị (phòng, ban)"), "per_page": _l("Số dòng mỗi trang"), "page": _l("Trang"),
}

# What went wrong, by the stable code of the core's errors.
CODE_MESSAGES = {
    "required": _l("bắt buộc phải nhập."),
    "wrong_type": _l("giá trị không đúng kiểu."),
    "too_long": _l("quá dài."),
    "control_character": _l("chứa ký tự điều khiển hoặc ký tự ẩn, không được phép."),
    "invalid_text": _l("không phải văn bản hợp lệ."),
    "invalid_cccd": _l("số CCCD phải gồm đúng 12 chữ số, bắt đầu bằng mã tỉnh 001–096 và khớp "
                       "với năm sinh."),
    "invalid_cmnd": _l("số CMND phải gồm đúng 9 chữ số."),
    "invalid_passport": _l("số hộ chiếu gồm một chữ cái và 7 hoặc 8 chữ số."),
    "invalid_email": _l("địa chỉ thư điện tử không hợp lệ."),
    "invalid_mobile": _l("số di động gồm 10 chữ số bắt đầu bằng 03, 05, 07, 08 hoặc 09 "
                         "(hoặc +84 và 9 chữ số)."),
    "invalid_date": _l("ngày không hợp lệ (định dạng ngày/tháng/năm)."),
    "invalid_device_type": _l("chỉ nhận TOKEN, SIM, SOFT, RSSP hoặc HSM."),
    "unknown_organization": _l("không tìm thấy cơ quan, đơn vị này trong phạm vi được phân cấp."),
    "inactive_organization": _l("cơ quan, đơn vị này không còn hoạt động."),
    "duplicate_subscriber": _l("đã có thuê bao đăng ký với số giấy tờ này."),
    "duplicate_user": _l("tên đăng nhập hoặc tài khoản này đã tồn tại."),
    "unknown_subscriber": _l("không tìm thấy thuê bao."),
    "unknown_certificate": _l("không tìm thấy chứng thư của thuê bao này."),
    "unknown_profile": _l("mẫu chứng thư không hợp lệ cho thuê bao."),
    "unknown_field": _l("trường không được chấp nhận."),
    "already_revoked": _l("chứng thư đã bị thu hồi."),
    "expired": _l("chứng thư đã hết hạn."),
    "duplicate_request": _l("đã có một yêu cầu cùng loại đang xử lý cho chứng thư này."),
    "two_person_rule": _l("người phê duyệt phải khác người lập và người gửi yêu cầu "
                          "(chữ ký nháy)."),
    "already_approved": _l("yêu cầu đã được phê duyệt."),
    "wrong_state": _l("yêu cầu không ở trạng thái cho phép thao tác này."),
    "domain_suspended": _l("việc phân cấp của đơn vị RA này đang bị tạm dừng: chỉ được xem, "
                           "không được thao tác."),
    "forbidden": _l("vai trò của bạn không được phép thao tác này."),
    "no_delegation": _l("tài khoản chưa được phân cấp."),
    "weak_password": _l("mật khẩu phải có ít nhất 12 ký tự."),
    "csrf": _l("Phiên biểu mẫu đã hết hạn hoặc không hợp lệ. Vui lòng tải lại trang và thử lại."),
    "csr_too_large": _l("tệp quá lớn."),
    "too_large": _l("tệp quá lớn."),
    "bad_csr": _l("không đọc được yêu cầu ký chứng thư (PEM hoặc DER)."),
    "bad_template": _l("tệp không theo mẫu 19 cột (dòng đầu phải là tiêu đề các cột của mẫu)."),
    "bad_file": _l("không đọc được tệp (CSV UTF-8 hoặc XLSX)."),
    "bad_encoding": _l("tệp CSV phải được mã hóa UTF-8."),
    "invalid_serial": _l("số hiệu chứng thư phải là số thập lục phân."),
    "no_change": _l("không có gì thay đổi."),
    "profile_not_allowed": _l("đơn vị RA không được phép đề nghị mẫu chứng thư này."),
    "device_type_not_allowed": _l("đơn vị RA không được phép đề nghị loại thiết bị này."),
    "hsm_unavailable": _l("thiết bị HSM tạm thời không truy cập được, vui lòng thử lại sau."),
}
GENERIC = {"invalid_input": _l("giá trị không hợp lệ."),
           "policy_violation": _l("không phù hợp với chính sách chứng thực."),
           "not_found": _l("không tìm thấy."), "permission_denied": _l("không được phép."),
           "conflict": _l("xung đột với trạng thái hiện tại.")}


def error_message(exc: CAError) -> str:
    """One sentence naming the field at fault, in the page language."""
    text = CODE_MESSAGES.get(exc.code)
    if text is None:
        text = next((GENERIC[c] for c in (exc.code,) if c in GENERIC), None)
    if text is None:
        base = type(exc).code if type(exc).code in GENERIC else "invalid_input"
        if exc.code.startswith("csr") or exc.code.startswith("key_"):
            base = "bad_csr"
        text = CODE_MESSAGES.get(base) or GENERIC[base]
        if base != "bad_csr":
            text = f"{text} ({exc.message})"
    if exc.field:
        label = FIELD_LABELS.get(exc.field, exc.field)
        return _("Trường «%(field)s»: %(message)s", field=str(label), message=str(text))
    return str(text)


def status_of(exc: CAError) -> int:
    return next((st for cls, st in STATUS if isinstance(exc, cls)), 400)


def caller() -> Caller:
    if not current_user.is_authenticated:
        abort(401)
    return current_user.caller


def require(*permissions: str, central: bool = False):
    """Login required, and the caller's role holds every permission (else 403)."""
    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            from ra_portal.auth import login_manager
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            who = current_user.caller
            if any(not who.can(p) for p in permissions) or (central and not who.is_central):
                return render_template("error.html", message=_("Bạn không có quyền xem trang "
                                                               "này.")), 403
            return view(*args, **kwargs)
        return inner
    return wrap


class CsrfError(CAError):
    code = "csrf"


def check_csrf() -> None:
    """Every POST of the pages carries the flask-wtf token; without it nothing happens."""
    form = FlaskForm()
    if not form.validate_on_submit():
        raise CsrfError("the form's CSRF token is missing or invalid")


def safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") \
            and not urlsplit(target).netloc and "\\" not in target:
        return target
    return url_for("pages.index")


def local_time(value: dt.datetime | None) -> str:
    """A time in Vietnam (UTC+7), as dd/mm/yyyy HH:MM."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M")


def int_arg(name: str, default: int, low: int = 1, high: int = 10**6) -> int:
    raw = request.args.get(name)
    try:
        value = int(raw) if raw not in (None, "") else default
    except ValueError:
        return default
    return min(max(value, low), high)


def page_errors(bp) -> None:
    """A blueprint's errors as a page: CAError with its status, an oversized upload as 413."""
    from werkzeug.exceptions import RequestEntityTooLarge

    @bp.errorhandler(CAError)
    def _ca_error(exc: CAError):
        return render_template("error.html", message=error_message(exc)), status_of(exc)

    @bp.errorhandler(RequestEntityTooLarge)
    def _too_large(exc):
        return render_template("error.html", message=_("Tệp tải lên quá lớn.")), 413
