"""Web fixtures: log a demo user in through the real login page (password + TOTP)."""
from __future__ import annotations

import re

import pyotp
import pytest
from sqlalchemy import select

from ca.ra.users import set_password
from ca.store.models_ra import RaUser
from tests.ra.conftest import caller_of  # noqa: F401  (a shared fixture)

PASSWORD = "mat-khau-thu-nghiem-2026"
CSRF_RE = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


class Browser:
    """The Flask test client as one logged-in person; posts carry the page's CSRF token."""

    def __init__(self, client) -> None:
        self.client = client

    def get(self, url, **kw):
        return self.client.get(url, **kw)

    def post(self, url, data=None, *, token_from: str | None = None, csrf: bool = True, **kw):
        data = dict(data or {})
        if csrf:
            page = self.client.get(token_from or url)
            data["csrf_token"] = csrf_of(page.get_data(as_text=True))
        return self.client.post(url, data=data, **kw)


@pytest.fixture
def login_as(app, services):
    """A fresh client logged in as `username` through /login."""
    def make(username: str) -> Browser:
        with services.db.transaction() as s:
            user = s.execute(select(RaUser).where(RaUser.username == username)).scalar_one()
            set_password(s, user, PASSWORD, actor="test", at=services.clock.now())
            secret = user.totp_secret
        client = app.test_client()
        page = client.get("/login").get_data(as_text=True)
        otp = pyotp.TOTP(secret).at(services.clock.now()) if secret else ""
        r = client.post("/login", data={"csrf_token": csrf_of(page), "username": username,
                                        "password": PASSWORD, "otp": otp})
        assert r.status_code == 302, r.get_data(as_text=True)[:500]
        return Browser(client)
    return make


@pytest.fixture
def app(app):
    """The shared app fixture, with its connection pool closed afterwards (PostgreSQL counts
    every pooled connection against max_connections)."""
    yield app
    from ra_portal.extensions import db
    with app.app_context():
        db.engine.dispose()
