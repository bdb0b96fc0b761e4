"""Bad request bodies and parameters: a 4xx JSON error naming the field, nothing stored,
never a 500; a suspended domain can read but not act."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from ca.store.models import AuditEvent, Certificate, RaDomain
from ca.store.models_ra import RaRequest
from tests import factories
from tests.ra.conftest import domain_id, staff_id

CSR = factories.csr(factories.key("p256")).decode()


def state(db):
    with db.transaction() as s:
        return tuple(s.execute(select(func.count()).select_from(t)).scalar_one()
                     for t in (RaRequest, AuditEvent, Certificate))


@pytest.fixture
def hanoi_sub(db):
    return staff_id(db, "staff.hanoi.1")


@pytest.mark.parametrize("body, status, field", [
    ({}, 400, "type"),
    ({"type": "issue"}, 400, "subscriber_id"),
    ({"type": "buy", "subscriber_id": "SUB"}, 400, "type"),
    ({"type": "issue", "subscriber_id": "SUB"}, 400, "csr_pem"),
    ({"type": "issue", "subscriber_id": "SUB", "csr_pem": "not a csr"}, 400, "csr"),
    ({"type": "issue", "subscriber_id": "SUB", "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\n"
      "AAAA\n-----END CERTIFICATE REQUEST-----"}, 400, "csr"),
    ({"type": "issue", "subscriber_id": "SUB", "csr_pem": CSR, "profile": "sub-ca"}, 400,
     "profile"),
    ({"type": "issue", "subscriber_id": "SUB", "csr_pem": CSR, "profile": "organization"}, 422,
     "profile"),
    ({"type": "issue", "subscriber_id": "SUB", "csr_pem": CSR, "validity_days": 5000}, 422,
     "validity_days"),
    ({"type": "issue", "subscriber_id": "SUB", "csr_pem": CSR, "validity_days": "3"}, 400,
     "validity_days"),
    ({"type": "issue", "subscriber_id": 999999, "csr_pem": CSR}, 400, "subscriber_id"),
    ({"type": "issue", "subscriber_id": "QN", "csr_pem": CSR}, 400, "subscriber_id"),
    ({"type": "issue", "subscriber_id": "SUB", "csr_pem": CSR, "submit": "yes"}, 400, "submit"),
    ({"type": "issue", "subscriber_id": "SUB", "csr_pem": CSR, "extra": 1}, 400, "extra"),
    ({"type": "issue", "subscriber_id": "SUB", "csr_pem": "\ud800"}, 400, "csr_pem"),
    ({"type": "issue", "subscriber_id": "SUB", "csr_pem": "A" * 70000}, 400, "csr_pem"),
    ({"type": "renew", "subscriber_id": "SUB", "csr_pem": CSR}, 400, "serial"),
    ({"type": "renew", "subscriber_id": "SUB", "csr_pem": CSR, "serial": "zz"}, 400, "serial"),
    ({"type": "revoke", "subscriber_id": "SUB", "serial": "1234567890abcdef1234"}, 400,
     "serial"),
    ({"type": "restore", "subscriber_id": "SUB", "csr_pem": CSR}, 400, "csr_pem"),
])
def test_request_bad_input(api_as, db, hanoi_sub, body, status, field):
    ids = {"SUB": hanoi_sub, "QN": staff_id(db, "staff.quangninh.1")}
    body = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    api = api_as("ra.hanoi")
    before = state(db)
    st, err = api.post("/api/v1/requests", body)
    assert st == status, err
    assert err["error"]["field"] == field, err
    assert state(db) == before


def test_revoke_needs_a_known_reason(api_as, db, issuance, hanoi_sub):
    from ca.issuance.service import IssueRequest
    cert = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="t", csr=CSR,
                                       subscriber_id=hanoi_sub))
    api = api_as("ra.hanoi")
    before = state(db)
    for body in ({}, {"reason": "bored"}, {"reason": "certificateHold"}, {"reason": 5}):
        st, err = api.post(f"/api/v1/certificates/{cert.serial}/revoke", body)
        assert st == 400 and err["error"]["field"] == "reason", (body, err)
    assert state(db) == before


def test_hostile_transport_input(api_as, client):
    api = api_as("ra.hanoi")
    h = {**api._headers(), "Content-Type": "application/json"}
    for data in ("[" * 100000, "\xff\xfe", "null", '"text"', "1e999999"):
        r = client.post("/api/v1/requests", data=data, headers=h)
        assert 400 <= r.status_code < 500, (data[:10], r.status_code)
        assert "error" in r.get_json()
    r = client.post("/api/v1/subscribers", data=b"x" * (9 * 1024 * 1024), headers=h)
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "too_large"
    r = client.delete("/api/v1/subscribers", headers=h)
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    assert client.get("/api/v1/nothing-here", headers=h).status_code == 404
    st, err = api.get("/api/v1/subscribers?colour=red")
    assert st == 400 and err["error"]["code"] == "unknown_parameter"
    st, err = api.get("/api/v1/requests?state=lost")
    assert st == 400 and err["error"]["field"] == "state"
    st, err = api.get("/api/v1/certificates/not-hex")
    assert st == 404
    st, err = api.get("/api/v1/subscribers/99999999999999999999")
    assert st == 404


def test_suspended_domain_reads_but_cannot_act(api_as, db, hanoi_sub):
    officer = api_as("ra.hanoi")
    with db.transaction() as s:
        s.execute(update(RaDomain).where(RaDomain.id == domain_id(db, "hanoi"))
                  .values(status="suspended"))
    assert officer.get(f"/api/v1/subscribers/{hanoi_sub}")[0] == 200
    before = state(db)
    st, err = officer.post("/api/v1/requests", {"type": "issue", "subscriber_id": hanoi_sub,
                                                "csr_pem": CSR})
    assert st == 403 and err["error"]["code"] == "domain_suspended"
    assert state(db) == before
