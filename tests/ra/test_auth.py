"""Users, passwords, TOTP, lockout, sessions, API tokens and the delegated-grant rule."""
from __future__ import annotations

import os
import re

import pyotp
import pytest
from sqlalchemy import delete, select

from ca.errors import InvalidInput, PermissionDenied
from ca.ra.authn import (AccountLocked, AuthenticationFailed, create_token, login,
                         revoke_token)
from ca.ra.roles import Caller
from ca.ra.users import create_user
from ca.store.models import AuditEvent
from ca.store.models_ra import ApiToken, RaUser
from tests.ra.conftest import Api, staff_id, units

PASSWORD = "mật-khẩu-đủ-dài-2026"


def make_user(db, clock, username="officer.test", role="ra_officer", domain="hanoi", **kw):
    with db.transaction() as s:
        new = create_user(s, Caller.system(), username=username, role=role, at=clock.now(),
                          domain_code=domain, password=PASSWORD, **kw)
        return new.totp_secret


def code(secret, clock, offset=0):
    return pyotp.TOTP(secret).at(clock.now().timestamp() + offset)


def test_password_is_argon2_and_totp_required_for_officers(db, clock):
    secret = make_user(db, clock)
    assert secret and len(secret) >= 16
    with db.transaction() as s:
        user = s.execute(select(RaUser).where(RaUser.username == "officer.test")).scalar_one()
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
        details = " ".join(s.execute(select(AuditEvent.details)).scalars())
    assert PASSWORD not in details and secret not in details
    with pytest.raises(AuthenticationFailed):
        login(db, clock, "officer.test", PASSWORD)  # no code
    with pytest.raises(AuthenticationFailed):
        login(db, clock, "officer.test", PASSWORD, "000000" if code(secret, clock) != "000000"
              else "111111")
    assert login(db, clock, "officer.test", PASSWORD, code(secret, clock)).username == \
        "officer.test"
    with pytest.raises(AuthenticationFailed):  # the same code cannot be replayed
        login(db, clock, "officer.test", PASSWORD, code(secret, clock))
    clock.advance(seconds=30)
    assert login(db, clock, "Officer.Test ", PASSWORD, code(secret, clock))


def test_subscriber_logs_in_without_second_factor(db, clock):
    with db.transaction() as s:
        s.execute(delete(RaUser).where(RaUser.username == "staff.hanoi.3"))
    secret = make_user(db, clock, "staff.login", "subscriber", None,
                       subscriber_ref=staff_id(db, "staff.hanoi.3"))
    assert secret is None
    assert login(db, clock, "staff.login", PASSWORD).role == "subscriber"


def test_lockout_after_five_failures(db, clock):
    secret = make_user(db, clock)
    for _ in range(5):
        with pytest.raises(AuthenticationFailed) as exc:
            login(db, clock, "officer.test", "wrong password!!", code(secret, clock))
        assert not isinstance(exc.value, AccountLocked)
    with pytest.raises(AccountLocked):
        login(db, clock, "officer.test", PASSWORD, code(secret, clock))
    clock.advance(minutes=16)
    assert login(db, clock, "officer.test", PASSWORD, code(secret, clock))
    with pytest.raises(AuthenticationFailed):
        login(db, clock, "nobody", PASSWORD, "123456")


def test_weak_password_and_bad_username_are_refused(db, clock):
    with db.transaction() as s:
        with pytest.raises(InvalidInput):
            create_user(s, Caller.system(), username="short.pw", role="ra_officer",
                        domain_code="hanoi", password="12345", at=clock.now())
        with pytest.raises(InvalidInput):
            create_user(s, Caller.system(), username="Bad User!", role="ra_officer",
                        domain_code="hanoi", at=clock.now())
        with pytest.raises(InvalidInput):
            create_user(s, Caller.system(), username="nodomain", role="ra_officer",
                        at=clock.now())


@pytest.mark.parametrize("granter, role, domain, ok", [
    ("ra.hanoi", "ra_officer", "hanoi", True),
    ("ra.hanoi", "ra_officer", "quangninh", False),   # outside own scope
    ("ra.hanoi", "ra_approver", "hanoi", False),      # a right the officer does not hold
    ("ra.hanoi", "central_operator", None, False),
    ("approver.hanoi", "ra_approver", "hanoi", True),
    ("approver.hanoi", "ra_officer", "hanoi", False),
    ("auditor", "central_auditor", None, False),      # auditors grant nothing
    ("operator", "ra_approver", "quangninh", True),
])
def test_delegated_grants(db, clock, caller_of, granter, role, domain, ok):
    by = caller_of(granter)
    with db.transaction() as s:
        if ok:
            assert create_user(s, by, username="granted.user", role=role, domain_code=domain,
                               at=clock.now()).user.role == role
        else:
            with pytest.raises(PermissionDenied):
                create_user(s, by, username="granted.user", role=role, domain_code=domain,
                            at=clock.now())


def test_subtree_officer_grants_only_inside_subtree(db, clock, caller_of):
    hn_units = units(db, "hanoi")
    make_user(db, clock, "unit.officer", organization_id=hn_units[0])
    by = caller_of("unit.officer")
    with db.transaction() as s:
        create_user(s, by, username="unit.officer2", role="ra_officer", domain_code="hanoi",
                    organization_id=hn_units[0], at=clock.now())
        with pytest.raises(PermissionDenied):
            create_user(s, by, username="unit.officer3", role="ra_officer", domain_code="hanoi",
                        organization_id=hn_units[1], at=clock.now())
        with pytest.raises(PermissionDenied):
            create_user(s, by, username="unit.officer4", role="ra_officer", domain_code="hanoi",
                        at=clock.now())


def test_subtree_officer_sees_only_its_subtree(db, clock, client, services):
    hn_units = units(db, "hanoi")
    make_user(db, clock, "unit.officer", organization_id=hn_units[0])
    api = Api(client, create_token(db, clock, "unit.officer", actor="test").token)
    st, body = api.get("/api/v1/subscribers")
    assert body["total"] >= 1 and all(s["organization_id"] == hn_units[0] for s in body["items"])
    st, orgs = api.get("/api/v1/organizations")
    assert [o["id"] for o in orgs] == [hn_units[0]]


def test_api_tokens_are_hashed_revocable_and_expire(db, clock, client):
    issued = create_token(db, clock, "ra.hanoi", actor="test", expires_days=1)
    with db.transaction() as s:
        row = s.get(ApiToken, issued.id)
        assert issued.token not in (row.token_hash, row.prefix)
        assert len(row.token_hash) == 64
    api = Api(client, issued.token)
    assert api.get("/api/v1/organizations")[0] == 200
    clock.advance(days=1, seconds=1)
    st, body = api.get("/api/v1/organizations")
    assert st == 401 and body["error"]["code"] == "unauthenticated"
    other = create_token(db, clock, "ra.hanoi", actor="test")
    api = Api(client, other.token)
    assert api.get("/api/v1/organizations")[0] == 200
    revoke_token(db, clock, other.id, actor="test")
    assert api.get("/api/v1/organizations")[0] == 401
    assert Api(client, "gca_" + "A" * 43).get("/api/v1/organizations")[0] == 401
    r = client.get("/api/v1/organizations", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)


def test_login_page_with_csrf_totp_and_session_expiry(db, clock, client):
    secret = make_user(db, clock)
    r = client.get("/login")
    assert r.status_code == 200 and "Đăng nhập" in r.get_data(as_text=True)
    token = _csrf(r.get_data(as_text=True))
    # no CSRF token: refused, nothing happens
    r = client.post("/login", data={"username": "officer.test", "password": PASSWORD,
                                    "otp": code(secret, clock)})
    assert r.status_code == 400
    assert client.get("/account").status_code == 302
    r = client.post("/login", data={"csrf_token": token, "username": "officer.test",
                                    "password": "sai mật khẩu rồi", "otp": code(secret, clock)})
    assert r.status_code == 401
    assert "Tên đăng nhập, mật khẩu hoặc mã xác thực không đúng." in r.get_data(as_text=True)
    r = client.post("/login", data={"csrf_token": token, "username": "officer.test",
                                    "password": PASSWORD, "otp": code(secret, clock)})
    assert r.status_code == 302
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    r = client.get("/account")
    assert r.status_code == 200 and "officer.test" in r.get_data(as_text=True)
    for _ in range(23):  # active use keeps the session for up to 10 hours
        clock.advance(minutes=25)
        assert client.get("/account").status_code == 200
    clock.advance(minutes=26)  # 601 minutes after login, 26 idle
    assert client.get("/account").status_code == 302  # absolute session lifetime


def test_idle_session_expires(db, clock, client):
    secret = make_user(db, clock)
    token = _csrf(client.get("/login").get_data(as_text=True))
    r = client.post("/login", data={"csrf_token": token, "username": "officer.test",
                                    "password": PASSWORD, "otp": code(secret, clock)})
    assert r.status_code == 302
    clock.advance(minutes=29)
    assert client.get("/account").status_code == 200
    clock.advance(minutes=31)
    assert client.get("/account").status_code == 302


def test_logout_needs_csrf_and_ends_the_session(db, clock, client):
    secret = make_user(db, clock)
    token = _csrf(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"csrf_token": token, "username": "officer.test",
                                "password": PASSWORD, "otp": code(secret, clock)})
    page = client.get("/account").get_data(as_text=True)
    assert client.post("/logout").status_code == 400
    assert client.get("/account").status_code == 200
    r = client.post("/logout", data={"csrf_token": _csrf(page)})
    assert r.status_code == 302
    assert client.get("/account").status_code == 302


def test_login_page_locks_out_in_vietnamese(db, clock, client):
    secret = make_user(db, clock)
    token = _csrf(client.get("/login").get_data(as_text=True))
    for _ in range(5):
        client.post("/login", data={"csrf_token": token, "username": "officer.test",
                                    "password": "sai mật khẩu rồi", "otp": "123456"})
    r = client.post("/login", data={"csrf_token": token, "username": "officer.test",
                                    "password": PASSWORD, "otp": code(secret, clock)})
    assert r.status_code == 403 and "bị khóa" in r.get_data(as_text=True)


def test_demo_users_and_credentials_file(db, services, clock):
    from ra_portal.demo import init_demo
    with db.transaction() as s:
        roles = dict(s.execute(select(RaUser.username, RaUser.role)).all())
    assert roles["operator"] == "central_operator" and roles["auditor"] == "central_auditor"
    assert roles["ra.quangninh"] == "ra_officer" and roles["approver.hanoi"] == "ra_approver"
    assert all(roles[f"staff.{p}.{i}"] == "subscriber" for p in ("hanoi", "quangninh")
               for i in range(1, 6))
    with db.transaction() as s:
        s.execute(delete(RaUser).where(RaUser.username == "approver.quangninh"))
    said = []
    init_demo(services, echo=said.append)
    path = services.settings.instance / "demo-credentials.txt"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    line = [x for x in path.read_text("utf-8").splitlines()
            if x.startswith("approver.quangninh\t")][0]
    _, role, password, secret = line.split("\t")
    assert role == "ra_approver" and password not in " ".join(said)
    clock.advance(minutes=1)
    assert login(services.db, clock, "approver.quangninh", password,
                 pyotp.TOTP(secret).at(clock.now())).role == "ra_approver"
