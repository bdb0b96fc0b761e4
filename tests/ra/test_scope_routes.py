"""Scope over the whole route table: for every /api/v1 route with an id, an officer or approver
of Quảng Ninh asking for a Hà Nội object gets exactly the answer given for a missing id; every
list route returns nothing of Hà Nội. Routes are read from app.url_map, so a new route that is
not covered here makes this test fail."""
from __future__ import annotations

import re

import pytest

from ca.issuance.service import IssueRequest
from ca.ra import requests as ra_requests
from tests import factories
from tests.ra.conftest import staff_id, units

MISSING = {"subscriber_id": "999999", "organization_id": "999999", "request_id": "999999",
           "serial": "7a3f00000000000000000000000000000000beef",
           "transfer_id": "999999",  # transfers (docs/transfers.md)
           "plan_id": "999999"}  # reorganisation plans (docs/reorganisation.md)
# GET routes without an id, and how to tell a Hà Nội row in their answer.
LIST_ROUTES = {"/api/v1/organizations", "/api/v1/subscribers", "/api/v1/requests",
               "/api/v1/certificates", "/api/v1/transfers",
               "/api/v1/reorg/plans"}  # docs/reorganisation.md
PUBLIC = {"/api/v1/openapi.json"}
# Routes on one organisation (versions, rename): covered by the id tests below.
ORGANIZATION_ROUTES = {"/api/v1/organizations/<int:organization_id>",
                       "/api/v1/organizations/<int:organization_id>/versions",
                       "/api/v1/organizations/<int:organization_id>/rename",
                       "/api/v1/organizations/<int:organization_id>/move",  # transfers helper
                       "/api/v1/organizations/<int:organization_id>/merge"}


@pytest.fixture
def hanoi_objects(db, services, issuance, caller_of):
    sub = staff_id(db, "staff.hanoi.2")
    sub_other, haiphong_unit = staff_id(db, "staff.hanoi.3"), units(db, "haiphong")[0]
    hanoi_officer = caller_of("ra.hanoi")
    cert = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                       csr=factories.csr(factories.key("p256")),
                                       subscriber_id=sub))
    with db.transaction() as s:
        req = ra_requests.create(s, services.clock, caller_of("ra.hanoi"), {
            "type": "renew", "subscriber_id": sub, "serial": cert.serial,
            "csr_pem": factories.csr(factories.key("p256")).decode()}, services.profiles)
        req_id = req.id
        # a Hà Nội person released to a third province (Hải Phòng): not Quảng Ninh's business
        from ca.ra import transfers
        other = transfers.transfer(s, services.clock, hanoi_officer, sub_other,
                                   haiphong_unit, services.profiles)
        transfer_id = other.id
    from ca.reorg.plans import create_plan  # a Hà Nội reorganisation plan
    hn_units = units(db, "hanoi")
    with db.transaction() as s:
        plan_id = create_plan(s, hanoi_officer, name="Hợp nhất phòng", clock=services.clock,
                              items=[{"kind": "absorb_unit", "sources": [hn_units[1]],
                                      "target": hn_units[2]}]).id
    return {"subscriber_id": str(sub), "organization_id": str(units(db, "hanoi")[0]),
            "request_id": str(req_id), "serial": cert.serial, "transfer_id": str(transfer_id),
            "plan_id": str(plan_id)}


def _api_rules(app):
    return [r for r in app.url_map.iter_rules() if r.rule.startswith("/api/")]


def _url(rule, values):
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: values[m.group(1)], rule.rule)


def _normalised(body, value):
    return {"error": {k: (v.replace(value, "ID") if isinstance(v, str) else v)
                      for k, v in body["error"].items()}}


def test_organization_routes_are_known(app):
    found = {r.rule for r in _api_rules(app) if r.rule.startswith("/api/v1/organizations/")}
    assert found == ORGANIZATION_ROUTES, "a new organisation route needs a scope check here"


def test_every_api_route_is_authenticated_or_public(app, client):
    for rule in _api_rules(app):
        if rule.rule in PUBLIC:
            continue
        values = {a: MISSING[a] for a in rule.arguments}
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            r = client.open(_url(rule, values), method=method, json={})
            assert r.status_code == 401, (method, rule.rule, r.status_code)
            assert r.get_json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("who", ["ra.quangninh", "approver.quangninh", "staff.quangninh.1"])
def test_hanoi_objects_answer_like_missing_ones(app, api_as, hanoi_objects, who, db):
    api = api_as(who)
    qn_unit = units(db, "quangninh")[0]
    checked = 0
    for rule in _api_rules(app):
        if not rule.arguments:
            continue
        unknown = set(rule.arguments) - set(MISSING)
        assert not unknown, f"{rule.rule}: add the id kind {unknown} to this scope test"
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            body = {"reason": "superseded", "organization_id": qn_unit,
                    "name": "Tên mới"}  # name: organisation rename
            answers = []
            for values in (hanoi_objects, MISSING):
                url = _url(rule, {a: values[a] for a in rule.arguments})
                r = api.client.open(url, method=method, json=body, headers=api._headers())
                assert r.status_code == 404, (who, method, url, r.status_code, r.get_json())
                arg = next(iter(rule.arguments))
                answers.append(_normalised(r.get_json(), values[arg]))
            assert answers[0] == answers[1], (method, rule.rule, answers)
            checked += 1
    assert checked >= 8


def test_hanoi_objects_are_visible_to_hanoi(app, api_as, hanoi_objects):
    api = api_as("ra.hanoi")
    for rule in _api_rules(app):
        if rule.arguments and "GET" in rule.methods:
            st, body = api.get(_url(rule, hanoi_objects))
            assert st == 200, (rule.rule, body)


@pytest.mark.parametrize("who", ["ra.quangninh", "approver.quangninh"])
def test_list_routes_show_nothing_of_hanoi(app, api_as, hanoi_objects, who):
    api = api_as(who)
    hanoi_sub = int(hanoi_objects["subscriber_id"])
    list_routes = {r.rule for r in _api_rules(app)
                   if not r.arguments and "GET" in r.methods and r.rule not in PUBLIC}
    assert list_routes == LIST_ROUTES, "a new list route needs a scope check here"
    from ra_portal.api import allowed_query
    rules = {r.rule: r for r in _api_rules(app)}
    for url in sorted(LIST_ROUTES):
        accepted = allowed_query(rules[url], "GET")
        queries = [""] + [q for name, q in (
            ("q", "?q=nguyen"), ("q", "?q=Nguy%E1%BB%85n"),
            ("subscriber_id", f"?subscriber_id={hanoi_sub}"), ("per_page", "?per_page=200"))
            if name in accepted]
        for query in queries:
            st, body = api.get(url + query)
            assert st == 200, (url, query, body)
            items = body if isinstance(body, list) else body["items"]
            for item in items:
                assert item.get("domain", "quangninh") == "quangninh", (url, item)
                assert item.get("subscriber_id") != hanoi_sub, (url, item)
    st, body = api.get("/api/v1/organizations")
    assert body and all(o["domain"] == "quangninh" for o in body)


def test_central_operator_sees_both_provinces(api_as, hanoi_objects):
    st, body = api_as("operator").get("/api/v1/subscribers?per_page=200")
    domains = {s["domain"] for s in body["items"]}
    assert {"hanoi", "quangninh"} <= domains
    st, body = api_as("auditor").get(f"/api/v1/requests/{hanoi_objects['request_id']}")
    assert st == 200


def test_batch_lookup_of_subscribers_keeps_to_the_scope(db, caller_of):
    """Scope.subscribers_by_id (the batch create's one query) returns exactly what
    Scope.subscriber would return one by one: another province's and missing ids are absent."""
    from ca.ra.scope import Scope
    hanoi = [staff_id(db, "staff.hanoi.1"), staff_id(db, "staff.hanoi.2")]
    other = staff_id(db, "staff.quangninh.1")
    with db.read() as s:
        found = Scope(s, caller_of("ra.hanoi")).subscribers_by_id(
            [*hanoi, other, 999999, 2**40, True, "12", None, hanoi[0]])
        assert sorted(found) == sorted(hanoi)
        assert all(found[i].id == i for i in hanoi)
        assert Scope(s, caller_of("ra.hanoi")).subscribers_by_id([]) == {}
        assert set(Scope(s, caller_of("ra.quangninh")).subscribers_by_id([*hanoi, other])) \
            == {other}
