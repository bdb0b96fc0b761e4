"""Login and logout pages (password + TOTP code), CSRF-protected forms."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from ca.ra.authn import AccountLocked, AuthenticationFailed, login
from ra_portal import services
from ra_portal.auth import portal_user

bp = Blueprint("auth_pages", __name__, template_folder="templates")

MESSAGES = {
    "failed": "Tên đăng nhập, mật khẩu hoặc mã xác thực không đúng.",
    "locked": "Tài khoản tạm thời bị khóa do đăng nhập sai nhiều lần. Vui lòng thử lại sau "
              "15 phút hoặc liên hệ quản trị viên.",
}


class LoginForm(FlaskForm):
    username = StringField("Tên đăng nhập", validators=[DataRequired("Nhập tên đăng nhập."),
                                                        Length(max=64)])
    password = PasswordField("Mật khẩu", validators=[DataRequired("Nhập mật khẩu."),
                                                     Length(max=256)])
    otp = StringField("Mã xác thực (6 chữ số)", validators=[Length(max=8)])


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") \
            and not urlsplit(target).netloc and "\\" not in target:
        return target
    return url_for("pages.index")


@bp.route("/login", methods=["GET", "POST"])
def login_page():
    form = LoginForm()
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            svc = services()
            try:
                user = login(svc.db, svc.clock, form.username.data, form.password.data,
                             form.otp.data)
            except AccountLocked:
                flash(MESSAGES["locked"], "error")
                status = 403
            except AuthenticationFailed:
                flash(MESSAGES["failed"], "error")
                status = 401
            else:
                session.clear()
                login_user(portal_user(user))
                session.permanent = True
                session["login_at"] = svc.clock.now().timestamp()
                return redirect(_safe_next(request.args.get("next")))
        else:
            status = 400
            if form.csrf_token.errors:
                flash("Phiên biểu mẫu đã hết hạn hoặc không hợp lệ. Vui lòng thử lại.", "error")
    return render_template("login.html", form=form), status


@bp.post("/logout")
def logout_page():
    form = FlaskForm()
    if not form.validate_on_submit():
        return render_template("login.html", form=LoginForm(),
                               error="Yêu cầu đăng xuất không hợp lệ."), 400
    if current_user.is_authenticated:
        logout_user()
    session.clear()
    return redirect(url_for("auth_pages.login_page"))


ROLE_NAMES = {"central_operator": "Cán bộ vận hành trung tâm", "central_auditor": "Kiểm toán viên",
              "ra_officer": "Cán bộ RA", "ra_approver": "Người phê duyệt",
              "subscriber": "Thuê bao"}


@bp.get("/account")
@login_required
def account():
    caller = current_user.caller
    return render_template("login.html", account=caller, role_name=ROLE_NAMES[caller.role],
                           form=FlaskForm())
