"""Login sessions for the portal pages: flask-login, session expiry, secure cookie flags."""
from __future__ import annotations

import datetime as dt

from flask import Flask, session
from flask_login import LoginManager, UserMixin, current_user, logout_user

from ca.ra.roles import Caller
from ca.store.models_ra import RaUser

IDLE_TIMEOUT = dt.timedelta(minutes=30)
ABSOLUTE_TIMEOUT = dt.timedelta(hours=10)

login_manager = LoginManager()
login_manager.login_view = "auth_pages.login_page"
login_manager.login_message = "Vui lòng đăng nhập để tiếp tục."
login_manager.session_protection = "strong"


class PortalUser(UserMixin):
    """The logged-in user as flask-login sees it; its id carries the auth epoch, so changing
    the password (or disabling the user) ends every open session."""

    def __init__(self, caller: Caller, epoch: int) -> None:
        self.caller, self.epoch = caller, epoch

    def get_id(self) -> str:
        return f"{self.caller.user_id}:{self.epoch}"


def portal_user(user: RaUser) -> PortalUser:
    return PortalUser(Caller.of(user), user.auth_epoch)


@login_manager.user_loader
def _load(user_key: str):
    from ra_portal import services
    try:
        uid, epoch = (int(x) for x in user_key.split(":"))
    except ValueError:
        return None
    with services().db.transaction() as s:
        user = s.get(RaUser, uid)
        if user is None or not user.active or user.auth_epoch != epoch:
            return None
        return portal_user(user)


def _expire_sessions() -> None:
    """Idle timeout and absolute lifetime, checked on the server with the services' clock
    (the cookie's own expiry is only a hint to the browser)."""
    if not current_user.is_authenticated:
        return
    from ra_portal import services
    now = services().clock.now().timestamp()
    started, seen = session.get("login_at"), session.get("seen_at", session.get("login_at"))
    if (started is None or now - started > ABSOLUTE_TIMEOUT.total_seconds()
            or seen is None or now - seen > IDLE_TIMEOUT.total_seconds()):
        logout_user()
        session.clear()
        return
    session["seen_at"] = now


def init_auth(app: Flask) -> None:
    secure = app.config.get("SESSION_COOKIE_SECURE", False)
    app.config["PERMANENT_SESSION_LIFETIME"] = IDLE_TIMEOUT
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SECURE=secure,
                      REMEMBER_COOKIE_SAMESITE="Lax", WTF_CSRF_TIME_LIMIT=3600)
    login_manager.init_app(app)
    app.before_request(_expire_sessions)


def current_caller() -> Caller | None:
    return current_user.caller if current_user.is_authenticated else None
