"""/api/v1/tokens/* through the Flask app (fast): who may call what, scope (another province's
holder or device answers exactly like a missing one), bad input (4xx, nothing changed), no
caching, and a Schemathesis run of the document's token operations."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from sqlalchemy import func, select

from ca.store.models import AuditEvent
from ca.store.models_tokens import KeyDevice, SoPinEscrow
from tests.ra.conftest import api_as, staff_id, token_for  # noqa: F401  (shared fixtures)
from tests.tokens.test_restore_workflow import make_device


def _counts(db) -> tuple[int, int, int]:
    with db.transaction() as s:
        return tuple(s.execute(select(func.count()).select_from(t)).scalar_one()
                     for t in (AuditEvent, KeyDevice, SoPinEscrow))


def _norm(body: dict, value: str) -> dict:
    return {k: (v.replace(value, "ID") if isinstance(v, str) else v)
            for k, v in body["error"].items()}


def test_officer_enrolment_steps_are_audited_as_the_caller(api_as, db):
    api = api_as("ra.hanoi")
    st, body = api.post("/api/v1/tokens/start", {"subscriber": "staff.hanoi.1",
                                                  "label": "nva-2026"})
    assert st == 200 and body["so_pin"] is None and body["holder"], body
    dev = body["device_id"]
    st, body = api.post("/api/v1/tokens/escrow", {"device_id": dev, "so_pin": "Kx7-q2Lm9Rt4wZ8b"})
    assert st == 200 and body == {"ok": True}
    # Escrowed once: a second escrow is a conflict, with the class name for the workstation.
    st, body = api.post("/api/v1/tokens/escrow", {"device_id": dev, "so_pin": "Zz9-q2Lm9Rt4wZ8b"})
    assert st == 409 and body["error"]["code"] == "escrow_exists"
    assert body["error"]["kind"] == "Conflict"
    with db.transaction() as s:
        actors = {(e.action, e.actor) for e in s.execute(select(AuditEvent).where(
            AuditEvent.target == f"device:{dev}")).scalars()}
        row = s.execute(select(SoPinEscrow).where(SoPinEscrow.device_id == dev)).scalar_one()
        assert b"Kx7-q2Lm9Rt4wZ8b" not in row.ciphertext
    assert ("device.register", "user:ra.hanoi") in actors
    assert ("device.escrow.store", "user:ra.hanoi") in actors


def test_answers_are_not_cacheable(api_as, client):
    r = client.post("/api/v1/tokens/start", json={"subscriber": "staff.hanoi.1", "label": "x"},
                    headers={"Authorization": f"Bearer {api_as('ra.hanoi').token}"})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    r = client.post("/api/v1/tokens/start", json={"subscriber": "nobody", "label": "x"},
                    headers={"Authorization": f"Bearer {api_as('ra.hanoi').token}"})
    assert r.status_code == 404 and r.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("who", ["ra.quangninh", "approver.quangninh", "staff.quangninh.1"])
def test_another_provinces_holder_and_device_answer_like_missing_ones(api_as, db, clock,
                                                                      issuance, who):
    hanoi_dev = make_device(db, clock, issuance, "staff.hanoi.1")
    hanoi_sub = staff_id(db, "staff.hanoi.1")
    api = api_as(who)
    api.token  # created before counting
    before = _counts(db)
    answers = []
    for sub in (str(hanoi_sub), "999999"):
        st, body = api.post("/api/v1/tokens/start", {"subscriber": sub, "label": "t"})
        assert st == 404, (who, st, body)
        answers.append(_norm(body, sub))
    assert answers[0] == answers[1]
    calls = [("complete", {"serial": "abc"}), ("initialised", {"serial": "abc"}),
             ("abort", {"reason": "x"}), ("escrow", {"so_pin": "Kx7-q2Lm9Rt4wZ8b"}),
             ("unblock-done", {"serial": "abc", "ok": False}),
             ("so-pin-state", {"serial": "abc", "authorisation_id": 1, "on_token": "current"}),
             ("stage-so-pin", {"serial": "abc", "authorisation_id": 1,
                               "so_pin": "Kx7-q2Lm9Rt4wZ8b"})]
    for route, extra in calls:
        answers = []
        for dev in (hanoi_dev, 999999):
            st, body = api.post(f"/api/v1/tokens/{route}", {"device_id": dev, **extra})
            assert st == 404, (who, route, st, body)
            answers.append(_norm(body, str(dev)))
        assert answers[0] == answers[1], (route, answers)
    assert _counts(db) == before  # nothing recorded, nothing changed


def test_roles_that_may_not_enrol(api_as, db, clock, issuance):
    dev = make_device(db, clock, issuance, "staff.hanoi.1")
    apis = {who: api_as(who) for who in ("approver.hanoi", "staff.hanoi.1", "auditor")}
    before = _counts(db)
    for who, api in apis.items():
        st, body = api.post("/api/v1/tokens/start", {"subscriber": "staff.hanoi.1",
                                                     "label": "t"})
        assert st == 403 and body["error"]["code"] == "forbidden", (who, body)
        st, body = api.post("/api/v1/tokens/complete", {"device_id": dev, "serial": "x"})
        assert st == 403, (who, body)
    # The holder may finish an unblock of their own device (the checks after that are the
    # unblock's: no unblock is in progress here).
    st, body = apis["staff.hanoi.1"].post("/api/v1/tokens/so-pin-state", {
        "device_id": dev, "serial": _serial(db, dev), "authorisation_id": 1,
        "on_token": "current"})
    assert st == 409 and body["error"]["code"] == "no_unblock_in_progress", body
    # Nor can anyone mark a device restored without the unblock that used its code.
    st, body = apis["staff.hanoi.1"].post("/api/v1/tokens/unblock-done", {
        "device_id": dev, "serial": _serial(db, dev), "ok": True})
    assert st == 400 and body["error"]["field"] == "authorisation_id", body
    st, body = apis["staff.hanoi.1"].post("/api/v1/tokens/unblock-done", {
        "device_id": dev, "serial": _serial(db, dev), "ok": True, "authorisation_id": 1})
    assert st == 409 and body["error"]["code"] == "no_unblock_in_progress", body
    assert _counts(db) == before
    with db.transaction() as s:
        assert s.get(KeyDevice, dev).state == "issued"


def _serial(db, dev: int) -> str:
    with db.transaction() as s:
        return s.get(KeyDevice, dev).serial


@pytest.mark.parametrize("route,payload,field", [
    ("start", {"subscriber": "staff.hanoi.1"}, "label"),
    ("start", {"subscriber": "staff.hanoi.1", "label": "t", "colour": "red"}, "colour"),
    ("start", {"subscriber": "staff.hanoi.1", "label": "t\x00"}, "label"),
    ("start", {"subscriber": 7, "label": "t"}, "subscriber"),
    ("start", {"subscriber": "staff.hanoi.1", "label": "t", "device_type": "FLOPPY"},
     "device_type"),
    ("escrow", {"device_id": "1", "so_pin": "Kx7-q2Lm9Rt4wZ8b"}, "device_id"),
    ("escrow", {"device_id": True, "so_pin": "Kx7-q2Lm9Rt4wZ8b"}, "device_id"),
    ("escrow", {"device_id": 2**40, "so_pin": "Kx7-q2Lm9Rt4wZ8b"}, "device_id"),
    ("escrow", {"device_id": 1, "so_pin": "short"}, "so_pin"),
    ("issue", {"device_id": 1, "serial": "a", "csr": "not base64!", "key_ref": "ab"}, "csr"),
    ("redeem-unblock", {"code": "X", "serial": "a", "certificates": "abc"}, "certificates"),
    ("redeem-unblock", {"code": "X", "serial": "a", "certificates": [1]}, "certificates"),
    ("unblock-done", {"device_id": 1, "serial": "a", "ok": "yes"}, "ok"),
])
def test_bad_input_is_a_400_naming_the_field(api_as, db, route, payload, field):
    api = api_as("ra.hanoi")
    before = _counts(db)
    st, body = api.post(f"/api/v1/tokens/{route}", payload)
    assert st == 400, body
    assert body["error"]["field"] == field and body["error"]["kind"] == "InvalidInput"
    assert _counts(db) == before


def test_not_json_and_no_token(api_as, client):
    r = client.post("/api/v1/tokens/start", data="subscriber=1",
                    headers={"Authorization": f"Bearer {api_as('ra.hanoi').token}"})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_body"
    r = client.post("/api/v1/tokens/start", json={"subscriber": "1", "label": "t"})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthenticated"


# -- the OpenAPI document of the token operations, checked by Schemathesis ----------------------
@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def hanoi_token(token_for):  # noqa: F811
    return token_for("ra.hanoi")


@schema.include(path_regex="^/tokens/").parametrize()
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_token_operations_match_the_document(case, hanoi_token):
    case.call_and_validate(headers={"Authorization": f"Bearer {hanoi_token}"},
                           excluded_checks=[checks.positive_data_acceptance])
