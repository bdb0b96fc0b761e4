"""E-mail notices through the outbox and a real local SMTP server (aiosmtpd): decisions made on
the pages, over the API and on the command line all notify; approvers hear of submitted
requests, officers of failures, staff of issuance, rejection, revocation and expiry (30/7
days); Vietnamese names arrive byte-exact; no secret is ever mailed; an SMTP outage never
fails the request and the mail is delivered later."""
from __future__ import annotations

import datetime as dt
import email
import socket
import time
import unicodedata
from email import policy

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from ca.clock import FixedClock
from ca.issuance.service import IssueRequest
from ca.ra import notify, outbox
from ca.ra import requests as ra_requests
from ca.ra.roles import Caller
from ca.revocation import revoke
from ca.store.models import Subscriber
from ca.store.models_outbox import NoticeOutbox
from tests import factories
from tests.ra.conftest import api_as, staff_id, token_for  # noqa: F401  (shared fixtures)


class Inbox:
    def __init__(self):
        self.messages, self.raw, self.rcpts = [], [], []

    async def handle_DATA(self, server, session, envelope):
        self.raw.append(envelope.content)
        self.rcpts.append(list(envelope.rcpt_tos))
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def wait(self, count: int, timeout: float = 15) -> list:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.messages) >= count, [m["Subject"] for m in self.messages]
        time.sleep(0.2)  # nothing more should arrive
        return self.messages

    def to(self, address: str) -> list:
        return [m for m, r in zip(self.messages, self.rcpts) if address in r]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smtp_env(monkeypatch, port: int) -> None:
    monkeypatch.setenv("GOVCA_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("GOVCA_SMTP_PORT", str(port))
    monkeypatch.setenv("GOVCA_SMTP_FROM", "GovCA <no-reply@govca.test>")


@pytest.fixture
def inbox(monkeypatch):
    box = Inbox()
    port = _free_port()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    _smtp_env(monkeypatch, port)
    box.port = port
    yield box
    ctl.stop()


def _submit(db, services, clock, sub, caller=None):
    with db.transaction() as s:
        return ra_requests.create(s, clock, caller or Caller.system("test"), {
            "type": "issue", "subscriber_id": sub, "profile": "personal",
            "csr_pem": factories.csr(factories.key("p256")).decode()}, services.profiles).id


def _outbox(db):
    with db.transaction() as s:
        return s.execute(select(NoticeOutbox).order_by(NoticeOutbox.id)).scalars().all()


def test_issuance_and_rejection_on_the_pages_are_mailed_in_vietnamese(inbox, login_as, db,
                                                                      services, clock):
    sub = staff_id(db, "staff.hanoi.1")
    approver = login_as("approver.hanoi")
    rid = _submit(db, services, clock, sub)
    # The submitted request is announced to the domain's approver and officer (demo: example
    # addresses), each in their words.
    inbox.wait(2)
    assert sorted(r[0] for r in inbox.rcpts) == ["approver-hanoi@hanoi.gov.vn",
                                                 "ra-hanoi@hanoi.gov.vn"]
    [to_approver] = inbox.to("approver-hanoi@hanoi.gov.vn")
    assert to_approver["Subject"] == f"[GovCA] Yêu cầu cấp mới số {rid} đang chờ Ông/Bà phê duyệt"
    [to_officer] = inbox.to("ra-hanoi@hanoi.gov.vn")
    assert to_officer["Subject"] == f"[GovCA] Yêu cầu cấp mới số {rid} đang chờ xử lý"
    r = approver.post(f"/ra/requests/{rid}/approve", token_from=f"/ra/requests/{rid}")
    assert r.status_code == 302
    inbox.wait(3)
    [msg] = inbox.to("staff-hanoi-1@hanoi.gov.vn")
    assert msg["To"].addresses[0].addr_spec == "staff-hanoi-1@hanoi.gov.vn"
    assert msg["Subject"] == f"[GovCA] Chứng thư số đã được cấp (yêu cầu số {rid})"
    assert msg.get_content().startswith("Kính gửi Ông/Bà Nguyễn Thị Ánh Tuyết,")
    rid2 = _submit(db, services, clock, staff_id(db, "staff.hanoi.2"))
    approver.post(f"/ra/requests/{rid2}/reject", {"note": "Thiếu văn bản đề nghị"},
                  token_from=f"/ra/requests/{rid2}")
    messages = inbox.wait(6)
    assert len(messages) == 6  # each decision once (no second mail from the page)
    [rejected] = inbox.to("staff-hanoi-2@hanoi.gov.vn")
    assert "bị từ chối" in rejected["Subject"]
    assert "Lý do: Thiếu văn bản đề nghị" in rejected.get_content()
    assert all(r.state == "sent" for r in _outbox(db))


def test_api_decisions_notify_staff_and_approvers(inbox, api_as, db):
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.3")
    st, req = officer.post("/api/v1/requests", {
        "type": "issue", "subscriber_id": sub, "profile": "personal",
        "csr_pem": factories.csr(factories.key("p256")).decode()})
    assert st == 201, req
    first = inbox.wait(1)[0]
    assert inbox.rcpts[0] == ["approver-hanoi@hanoi.gov.vn"]  # not the officer who prepared it
    assert "đang chờ Ông/Bà phê duyệt" in first["Subject"]
    with db.transaction() as s:
        assert s.get(Subscriber, sub).full_name in first.get_content()
    st, done = approver.post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 200 and done["state"] == "issued", done
    issued = inbox.wait(2)[1]
    assert inbox.rcpts[1] == ["staff-hanoi-3@hanoi.gov.vn"]
    assert done["certificate_serial"] in issued.get_content()
    # Quảng Ninh's approver heard nothing of Hà Nội's request.
    assert not inbox.to("approver-quangninh@quangninh.gov.vn")


def test_failure_reaches_officers_and_revocation_reaches_staff(inbox, api_as, db, services,
                                                               issuance, clock):
    sub = staff_id(db, "staff.hanoi.4")
    cert = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                       csr=factories.csr(factories.key("p256")),
                                       subscriber_id=sub))
    st, req = api_as("ra.hanoi").post(f"/api/v1/certificates/{cert.serial}/revoke",
                                      {"reason": "superseded"})
    assert st == 202, req
    inbox.wait(1)  # awaiting approval
    # Meanwhile the operator revokes it on the command line's path (ca.revocation.revoke).
    revoke(services.db, clock, serial=cert.serial, reason="keyCompromise", actor="system:cli")
    revoked = inbox.wait(2)[1]
    assert inbox.rcpts[1] == ["staff-hanoi-4@hanoi.gov.vn"]
    assert revoked["Subject"] == f"[GovCA] Chứng thư số {cert.serial} đã bị thu hồi"
    assert "lộ khóa bí mật" in revoked.get_content()
    # Approving the request now fails (already revoked): officers and approvers hear of it.
    st, done = api_as("approver.hanoi").post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 200 and done["state"] == "failed", done
    inbox.wait(4)
    failed = {r[0] for r in inbox.rcpts[2:]}
    assert failed == {"ra-hanoi@hanoi.gov.vn", "approver-hanoi@hanoi.gov.vn"}
    assert all("không thực hiện được" in m["Subject"] for m in inbox.messages[2:])


def test_restore_approval_mail_never_carries_the_code(inbox, api_as, db, services, clock,
                                                      issuance):
    from ca.ra import restore
    from tests.tokens.test_restore_workflow import make_device
    dev = make_device(db, clock, issuance, "staff.hanoi.5")
    st, req = api_as("staff.hanoi.5").post("/api/v1/requests", {
        "type": "restore", "subscriber_id": staff_id(db, "staff.hanoi.5"), "device_id": dev})
    assert st == 201, req
    with db.transaction() as s:
        from ca.store.models_ra import RaUser
        officer = Caller.of(s.execute(select(RaUser).where(
            RaUser.username == "ra.hanoi")).scalar_one())
        restore.record_identity_check(s, clock, officer, req["id"], method="video_call")
    st, done = api_as("approver.hanoi").post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 200 and done["state"] == "done"
    code = done["unblock_code"]
    messages = inbox.wait(3)
    [to_officer] = inbox.to("ra-hanoi@hanoi.gov.vn")  # the holder's own request: check identity
    assert "đang chờ xử lý" in to_officer["Subject"]
    staff_mail = inbox.to("staff-hanoi-5@hanoi.gov.vn")
    assert len(staff_mail) == 1 and "đã được phê duyệt" in staff_mail[0]["Subject"]
    for raw in inbox.raw:
        assert code.encode() not in raw and code.replace("-", "").encode() not in raw
    assert len(messages) == 3
    with db.transaction() as s:
        bodies = " ".join(r.body for r in s.execute(select(NoticeOutbox)).scalars())
    assert code not in bodies


def test_vietnamese_names_arrive_byte_exact(inbox, db, services, clock):
    decomposed = unicodedata.normalize("NFD", "Phạm Thị Hương Giang")
    sub = staff_id(db, "staff.hanoi.2")
    with db.transaction() as s:  # as a careless import might have stored it
        s.get(Subscriber, sub).full_name = decomposed
    rid = _submit(db, services, clock, sub)
    with db.transaction() as s:
        ra_requests.reject(s, clock, Caller.system("test"), rid, "Sai họ tên")
    inbox.wait(3)  # approver's and officer's "awaits", then the staff member's rejection
    [msg] = inbox.to("staff-hanoi-2@hanoi.gov.vn")
    raw = inbox.raw[inbox.messages.index(msg)]
    header_block = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n")[0]
    header_block.decode("ascii")  # RFC 2047 / MIME: headers are plain ASCII on the wire
    nfc = unicodedata.normalize("NFC", decomposed)
    assert msg["To"].addresses[0].display_name.encode() == nfc.encode()
    assert msg.get_content().startswith(f"Kính gửi Ông/Bà {nfc},")
    assert "bị từ chối" in msg["Subject"]


def test_expiry_reminders_once_each(inbox, db, services, issuance, clock):
    sub = staff_id(db, "staff.hanoi.3")
    cert = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                       csr=factories.csr(factories.key("p256")),
                                       subscriber_id=sub, validity_days=60))
    config = notify.SmtpConfig(host="127.0.0.1", port=inbox.port)
    at = lambda days: FixedClock(cert.not_after - dt.timedelta(days=days))  # noqa: E731
    assert notify.run_expiry_reminders(services.db, at(40), config) == 0
    assert notify.run_expiry_reminders(services.db, at(29), config) == 1
    assert notify.run_expiry_reminders(services.db, at(28), config) == 0
    assert notify.run_expiry_reminders(services.db, at(6), config) == 1
    assert notify.run_expiry_reminders(services.db, at(1), config) == 0
    subjects = [m["Subject"] for m in inbox.messages]
    assert subjects == ["[GovCA] Chứng thư số sắp hết hạn (30 ngày)",
                        "[GovCA] Chứng thư số sắp hết hạn (7 ngày)"]
    assert cert.serial in inbox.messages[0].get_content()
    assert inbox.rcpts == [["staff-hanoi-3@hanoi.gov.vn"]] * 2


def test_smtp_down_the_request_succeeds_and_the_mail_follows(monkeypatch, api_as, db, clock):
    port = _free_port()
    _smtp_env(monkeypatch, port)  # nobody listens there yet
    approver = api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.1")
    st, req = api_as("ra.hanoi").post("/api/v1/requests", {
        "type": "issue", "subscriber_id": sub, "profile": "personal",
        "csr_pem": factories.csr(factories.key("p256")).decode()})
    assert st == 201
    st, done = approver.post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 200 and done["state"] == "issued"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(r.attempts == 0 for r in _outbox(db)):
        time.sleep(0.05)
    rows = _outbox(db)
    assert len(rows) == 2 and all(r.state == "pending" and r.attempts == 1 for r in rows)
    assert {r.last_error for r in rows} == {"ConnectionRefusedError"}
    # Not yet due again: the scheduler's pass sends nothing and does not count an attempt.
    box = Inbox()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        assert outbox.run_outbox(db, clock) == 0
        later = FixedClock(clock.now() + dt.timedelta(minutes=2))
        assert outbox.run_outbox(db, later) == 2
        assert outbox.run_outbox(db, later) == 0  # never twice
    finally:
        ctl.stop()
    assert sorted(r[0] for r in box.rcpts) == ["approver-hanoi@hanoi.gov.vn",
                                               "staff-hanoi-1@hanoi.gov.vn"]
    assert all(r.state == "sent" and r.sent_at is not None for r in _outbox(db))


def test_rolled_back_change_writes_no_notice(inbox, db, services, clock):
    sub = staff_id(db, "staff.hanoi.1")
    with pytest.raises(RuntimeError):
        with db.transaction() as s:
            ra_requests.create(s, clock, Caller.system("test"), {
                "type": "issue", "subscriber_id": sub, "profile": "personal",
                "csr_pem": factories.csr(factories.key("p256")).decode()}, services.profiles)
            raise RuntimeError("crash before commit")
    time.sleep(0.5)
    assert inbox.messages == []
    with db.transaction() as s:
        assert s.execute(select(func.count()).select_from(NoticeOutbox)).scalar_one() == 0


def test_no_smtp_host_no_outbox(monkeypatch, db, services, clock):
    monkeypatch.delenv("GOVCA_SMTP_HOST", raising=False)
    _submit(db, services, clock, staff_id(db, "staff.hanoi.1"))
    assert _outbox(db) == []


# -- officers' and approvers' addresses -----------------------------------------------------------
@pytest.fixture
def cli_app(db, settings, clock, monkeypatch):
    from click.testing import CliRunner
    from ra_portal import create_app
    from ra_portal.cli import common
    monkeypatch.setattr(common, "_app", lambda: create_app(settings, clock=clock, testing=True))
    return CliRunner()


def _user(db, username):
    from ca.store.models_ra import RaUser
    with db.transaction() as s:
        return s.execute(select(RaUser).where(RaUser.username == username)).scalar_one_or_none()


def test_user_create_with_email_and_it_is_used(cli_app, inbox, db, services, clock):
    from ra_portal.cli import main
    r = cli_app.invoke(main, ["user", "create", "approver2.hanoi", "--role", "ra_approver",
                              "--domain", "hanoi", "--email", "pho-giam-doc@hanoi.gov.vn"])
    assert r.exit_code == 0, r.output
    assert _user(db, "approver2.hanoi").email == "pho-giam-doc@hanoi.gov.vn"
    r = cli_app.invoke(main, ["user", "create", "approver3.hanoi", "--role", "ra_approver",
                              "--domain", "hanoi", "--email", "không-phải-địa-chỉ"])
    assert r.exit_code == 1 and _user(db, "approver3.hanoi") is None
    _submit(db, services, clock, staff_id(db, "staff.hanoi.1"))
    inbox.wait(3)
    assert sorted(r[0] for r in inbox.rcpts) == ["approver-hanoi@hanoi.gov.vn",
                                                 "pho-giam-doc@hanoi.gov.vn",
                                                 "ra-hanoi@hanoi.gov.vn"]


def test_central_page_sets_a_users_email(login_as, db):
    from tests.web.conftest import csrf_of
    target = _user(db, "ra.quangninh")
    operator = login_as("operator")
    page = operator.get("/central/users")
    assert page.status_code == 200 and "ra-quangninh@quangninh.gov.vn" in page.get_data(
        as_text=True)
    token = csrf_of(page.get_data(as_text=True))
    r = operator.client.post("/central/users/email", data={
        "csrf_token": token, "user_id": str(target.id), "email": "van-thu@quangninh.gov.vn"})
    assert r.status_code == 302
    assert _user(db, "ra.quangninh").email == "van-thu@quangninh.gov.vn"
    # Bad address, no CSRF token, a subscriber's login, a domain officer: nothing changes.
    r = operator.client.post("/central/users/email", data={
        "csrf_token": token, "user_id": str(target.id), "email": "not an address"})
    assert r.status_code == 400
    r = operator.client.post("/central/users/email", data={
        "user_id": str(target.id), "email": "x@quangninh.gov.vn"})
    assert r.status_code in (400, 403)
    r = operator.client.post("/central/users/email", data={
        "csrf_token": token, "user_id": str(_user(db, "staff.hanoi.1").id),
        "email": "x@hanoi.gov.vn"})
    assert r.status_code == 404
    officer = login_as("ra.hanoi")
    assert officer.get("/central/users").status_code == 403
    assert _user(db, "ra.quangninh").email == "van-thu@quangninh.gov.vn"
    assert _user(db, "staff.hanoi.1").email is None
