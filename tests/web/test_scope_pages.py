"""Scope over the page route table: a Quảng Ninh user asking any page for a Hà Nội object gets
the answer given for a missing one, and nothing changes. Routes are read from app.url_map, so a
new page route with an unknown kind of id makes this test fail."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from ca.issuance.service import IssueRequest
from ca.ra import requests as ra_requests
from ca.store.models import AuditEvent
from tests import factories
from tests.ra.conftest import domain_id, staff_id
from tests.web.conftest import csrf_of

BLUEPRINTS = ("ra_web.", "me_web.", "central_web.", "bulk_web.")
MISSING = {"subscriber_id": "999999", "request_id": "999999",
           "serial": "7a3f00000000000000000000000000000000beef", "domain_id": "999999"}
FIXED = {"fmt": "pem", "action": "suspend"}


@pytest.fixture
def hanoi(db, services, issuance, caller_of):
    sub = staff_id(db, "staff.hanoi.2")
    cert = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                       csr=factories.csr(factories.key("p256")),
                                       subscriber_id=sub))
    with db.transaction() as s:
        req = ra_requests.create(s, services.clock, caller_of("ra.hanoi"), {
            "type": "renew", "subscriber_id": sub, "serial": cert.serial,
            "csr_pem": factories.csr(factories.key("p256")).decode()}, services.profiles)
        req_id = req.id
    return {"subscriber_id": str(sub), "request_id": str(req_id), "serial": cert.serial,
            "domain_id": str(domain_id(db, "hanoi"))}


def _events(db):
    with db.transaction() as s:
        return s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()


@pytest.mark.parametrize("who", ["ra.quangninh", "approver.quangninh", "staff.quangninh.1"])
def test_hanoi_objects_answer_like_missing_ones(app, login_as, hanoi, who, db):
    user = login_as(who)
    token = csrf_of(user.get("/me/" if who.startswith("staff") else "/ra/")
                    .get_data(as_text=True))
    before = _events(db)
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith(BLUEPRINTS) or not rule.arguments:
            continue
        unknown = set(rule.arguments) - set(MISSING) - set(FIXED)
        assert not unknown, f"{rule.rule}: add the id kind {unknown} to this scope test"
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            answers = []
            for values in (hanoi, MISSING):
                url = re.sub(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>",
                             lambda m: {**FIXED, **values}[m.group(1)], rule.rule)
                r = user.client.open(url, method=method, data={"csrf_token": token,
                                                               "reason": "keyCompromise"})
                answers.append(r.status_code)
                assert r.status_code in (403, 404), (who, method, url, r.status_code)
                assert "Ánh Tuyết" not in r.get_data(as_text=True)
            assert answers[0] == answers[1], (who, method, rule.rule, answers)
            checked += 1
    assert checked >= 10
    assert _events(db) == before  # nothing happened


@pytest.mark.parametrize("who", ["ra.quangninh", "staff.quangninh.1"])
def test_list_pages_show_nothing_of_hanoi(login_as, hanoi, who):
    user = login_as(who)
    for url in ("/ra/", "/ra/subscribers?q=", "/ra/requests?state=", "/me/", "/ra/export.csv"):
        r = user.get(url)
        body = r.data.decode("utf-8-sig")
        assert "Ánh Tuyết" not in body and "Lê Hoàng Phương" not in body, url
        assert hanoi["serial"] not in body, url
