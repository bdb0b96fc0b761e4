"""E-mail notices through a real local SMTP server (aiosmtpd): issuance, rejection, expiry
reminders once each, and an SMTP outage that does not break the page."""
from __future__ import annotations

import datetime as dt
import email
import socket
from email import policy

import pytest
from aiosmtpd.controller import Controller

from ca.clock import FixedClock
from ca.ra import notify
from ca.ra import requests as ra_requests
from ca.ra.roles import Caller
from tests import factories
from tests.ra.conftest import staff_id


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def inbox(monkeypatch):
    box = Inbox()
    port = _free_port()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    monkeypatch.setenv("GOVCA_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("GOVCA_SMTP_PORT", str(port))
    monkeypatch.setenv("GOVCA_SMTP_FROM", "GovCA <no-reply@govca.test>")
    yield box
    ctl.stop()


def _submit(db, services, clock, sub):
    with db.transaction() as s:
        return ra_requests.create(s, clock, Caller.system("test"), {
            "type": "issue", "subscriber_id": sub, "profile": "personal",
            "csr_pem": factories.csr(factories.key("p256")).decode()}, services.profiles).id


def test_issuance_and_rejection_are_mailed_in_vietnamese(inbox, login_as, db, services, clock):
    sub = staff_id(db, "staff.hanoi.1")
    approver = login_as("approver.hanoi")
    rid = _submit(db, services, clock, sub)
    r = approver.post(f"/ra/requests/{rid}/approve", token_from=f"/ra/requests/{rid}")
    assert r.status_code == 302
    assert len(inbox.messages) == 1
    msg = inbox.messages[0]
    assert msg["To"] == "staff-hanoi-1@hanoi.gov.vn"
    assert msg["Subject"] == f"[GovCA] Chứng thư số đã được cấp (yêu cầu số {rid})"
    body = msg.get_content()
    assert body.startswith("Kính gửi Ông/Bà Nguyễn Thị Ánh Tuyết,")
    rid2 = _submit(db, services, clock, staff_id(db, "staff.hanoi.2"))
    approver.post(f"/ra/requests/{rid2}/reject", {"note": "Thiếu văn bản đề nghị"},
                  token_from=f"/ra/requests/{rid2}")
    assert len(inbox.messages) == 2
    assert "bị từ chối" in inbox.messages[1]["Subject"]
    assert "Lý do: Thiếu văn bản đề nghị" in inbox.messages[1].get_content()


def test_expiry_reminders_once_each(inbox, db, services, issuance, clock):
    from ca.issuance.service import IssueRequest
    sub = staff_id(db, "staff.hanoi.3")
    cert = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                       csr=factories.csr(factories.key("p256")),
                                       subscriber_id=sub, validity_days=60))
    config = notify.SmtpConfig(host="127.0.0.1", port=int(__import__("os").environ[
        "GOVCA_SMTP_PORT"]))
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


def test_smtp_outage_does_not_break_the_page(monkeypatch, login_as, db, services, clock):
    monkeypatch.setenv("GOVCA_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("GOVCA_SMTP_PORT", str(_free_port()))  # nobody listens there
    approver = login_as("approver.hanoi")
    rid = _submit(db, services, clock, staff_id(db, "staff.hanoi.4"))
    r = approver.post(f"/ra/requests/{rid}/approve", token_from=f"/ra/requests/{rid}")
    assert r.status_code == 302
    assert "Đã phê duyệt" in approver.get(r.headers["Location"]).get_data(as_text=True)
