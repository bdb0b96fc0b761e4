"""Subscribers through the API: Form 01 checks, duplicates, search with and without
diacritics, pagination, transfer; bad input is a 4xx naming the field and stores nothing."""
from __future__ import annotations

import unicodedata

import pytest
from sqlalchemy import func, select

from ca.store.models import AuditEvent, Subscriber
from tests.ra.conftest import staff_id, units

GOOD = {"full_name": "Nguyễn Văn Thành", "id_number": "001090123456",
        "email": "nvthanh@hanoi.gov.vn", "date_of_birth": "1990-04-02",
        "mobile": "+84 912 345 678", "position": "Chuyên viên", "device_type": "sim"}


def counts(db):
    with db.transaction() as s:
        return (s.execute(select(func.count()).select_from(Subscriber)).scalar_one(),
                s.execute(select(func.count()).select_from(AuditEvent)).scalar_one())


def test_register_and_read_back(api_as, db):
    api = api_as("ra.hanoi")
    org = units(db, "hanoi")[1]
    st, sub = api.post("/api/v1/subscribers", {**GOOD, "organization_id": org})
    assert st == 201, sub
    assert sub["mobile"] == "0912345678" and sub["device_type"] == "SIM"
    assert sub["id_type"] == "CCCD" and sub["domain"] == "hanoi"
    st, again = api.get(f"/api/v1/subscribers/{sub['id']}")
    assert again == sub


def test_name_is_stored_nfc_byte_exact(api_as, db):
    api = api_as("ra.hanoi")
    decomposed = unicodedata.normalize("NFD", "Đặng Thị Ngọc Ánh")
    st, sub = api.post("/api/v1/subscribers", {**GOOD, "full_name": decomposed,
                                               "organization_id": units(db, "hanoi")[0]})
    assert st == 201
    assert sub["full_name"].encode() == unicodedata.normalize("NFC", "Đặng Thị Ngọc Ánh").encode()


@pytest.mark.parametrize("change, field, code", [
    ({"id_number": "00109012345"}, "id_number", "invalid_cccd"),
    ({"id_number": "00109012345a"}, "id_number", "invalid_cccd"),
    ({"id_number": "９９９０９０１２３４５６"}, "id_number", "invalid_cccd"),
    ({"id_number": "001290123456"}, "id_number", "invalid_cccd"),  # born in 2090?
    ({"id_number": "12345678", "id_type": "CMND"}, "id_number", "invalid_cmnd"),
    ({"id_number": "1234", "id_type": "PASSPORT"}, "id_number", "invalid_passport"),
    ({"id_type": "SSN"}, "id_type", "invalid_input"),
    ({"email": "không-phải-email"}, "email", "invalid_email"),
    ({"email": "a@b"}, "email", "invalid_email"),
    ({"mobile": "12345"}, "mobile", "invalid_mobile"),
    ({"device_type": "FLOPPY"}, "device_type", "invalid_device_type"),
    ({"full_name": "Nguyễn\u202eVăn"}, "full_name", "control_character"),
    ({"full_name": "Nguyễn\x00Văn"}, "full_name", "control_character"),
    ({"full_name": "   "}, "full_name", "required"),
    ({"full_name": "A" * 65}, "full_name", "too_long"),
    ({"full_name": 42}, "full_name", "wrong_type"),
    ({"date_of_birth": "1990-13-01"}, "date_of_birth", "invalid_date"),
    ({"date_of_birth": "2999-01-01"}, "date_of_birth", "invalid_date"),
    ({"organization_id": 999999}, "organization_id", "unknown_organization"),
    ({"organization_id": "3"}, "organization_id", "wrong_type"),
    ({"organization_id": True}, "organization_id", "wrong_type"),
    ({"nickname": "x"}, "nickname", "unknown_field"),
])
def test_form01_bad_input(api_as, db, change, field, code):
    api = api_as("ra.hanoi")
    before = counts(db)
    body = {**GOOD, "organization_id": units(db, "hanoi")[0], **change}
    st, err = api.post("/api/v1/subscribers", body)
    assert st == 400, err
    assert err["error"]["field"] == field and err["error"]["code"] == code, err
    assert counts(db) == before


def test_missing_fields_and_not_json(api_as, db, client):
    api = api_as("ra.hanoi")
    before = counts(db)
    for name in ("full_name", "id_number", "email", "organization_id"):
        body = {**GOOD, "organization_id": units(db, "hanoi")[0]}
        body.pop(name)
        st, err = api.post("/api/v1/subscribers", body)
        assert st == 400 and err["error"]["field"] == name
    r = client.post("/api/v1/subscribers", data="full_name=x", headers=api._headers())
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_body"
    r = client.post("/api/v1/subscribers", data="{not json", headers={
        **api._headers(), "Content-Type": "application/json"})
    assert r.status_code == 400
    assert api.post("/api/v1/subscribers", [1, 2])[0] == 400
    assert counts(db) == before


def test_duplicate_cccd_and_other_province_org(api_as, db):
    api = api_as("ra.hanoi")
    st, _ = api.post("/api/v1/subscribers", {**GOOD, "organization_id": units(db, "hanoi")[0]})
    assert st == 201
    before = counts(db)
    st, err = api.post("/api/v1/subscribers", {**GOOD, "full_name": "Người Khác",
                                               "organization_id": units(db, "hanoi")[1]})
    assert st == 409 and err["error"]["code"] == "duplicate_subscriber"
    st, err = api.post("/api/v1/subscribers", {**GOOD, "id_number": "001090654321",
                                               "organization_id": units(db, "quangninh")[0]})
    assert st == 400 and err["error"]["code"] == "unknown_organization"
    assert counts(db) == before


def test_roles_that_may_not_register(api_as, db):
    body = {**GOOD, "organization_id": units(db, "hanoi")[0]}
    for who in ("approver.hanoi", "auditor", "staff.hanoi.1"):
        st, err = api_as(who).post("/api/v1/subscribers", body)
        assert st in (400, 403), (who, err)
    st, err = api_as("approver.hanoi").post("/api/v1/subscribers", body)
    assert st == 403 and err["error"]["code"] == "forbidden"


def test_search_with_and_without_diacritics_and_pagination(api_as):
    api = api_as("ra.hanoi")
    for q in ("Nguyễn", "nguyen", "NGUYEN", "Nguyen Thi Anh", "tuyết"):
        st, body = api.get("/api/v1/subscribers", query_string={"q": q})
        assert [s["username"] for s in body["items"]] == ["staff.hanoi.1"], q
    st, body = api.get("/api/v1/subscribers", query_string={"q": "Đức"})
    assert [s["username"] for s in body["items"]] == ["staff.hanoi.2"]
    st, body = api.get("/api/v1/subscribers", query_string={"q": "duc"})
    assert [s["username"] for s in body["items"]] == ["staff.hanoi.2"]
    st, p1 = api.get("/api/v1/subscribers?per_page=2&page=1")
    st, p3 = api.get("/api/v1/subscribers?per_page=2&page=3")
    assert p1["total"] == 5 and len(p1["items"]) == 2 and len(p3["items"]) == 1
    st, none = api.get("/api/v1/subscribers", query_string={"q": "%"})
    assert none["items"] == []
    for bad in ("per_page=0", "per_page=1000", "page=-1", "page=abc", "organization_id=x"):
        st, err = api.get(f"/api/v1/subscribers?{bad}")
        assert st == 400, bad
    st, orgs = api.get("/api/v1/organizations", query_string={"q": "so y te"})
    assert orgs and all("Sở Y tế" == o["name"] for o in orgs)


def test_transfer_within_domain_raises_change_requests(api_as, db):
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.1")
    from tests.ra.test_workflow import issue_via_api
    done = issue_via_api(officer, approver, sub)
    target = units(db, "hanoi")[5]
    st, err = officer.post(f"/api/v1/subscribers/{sub}/transfer",
                           {"organization_id": 999999})  # another domain's unit: a release
    assert st == 400 and err["error"]["code"] == "unknown_organization"
    st, res = officer.post(f"/api/v1/subscribers/{sub}/transfer", {"organization_id": target})
    assert st == 200, res
    assert res["subscriber"]["organization_id"] == target
    [change] = res["change_requests"]
    assert change["type"] == "change" and change["serial"] == done["certificate_serial"]
    assert change["reason"] == "affiliationChanged"
    st, issued = approver.post(f"/api/v1/requests/{change['id']}/approve")
    assert issued["state"] == "issued", issued
    st, cert = officer.get(f"/api/v1/certificates/{issued['certificate_serial']}")
    assert "Sở Tài chính" in cert["subject"] and "Phòng Kế hoạch" in cert["subject"]
    st, old = officer.get(f"/api/v1/certificates/{done['certificate_serial']}")
    assert old["status"] == "revoked" and old["revocation_reason"] == "affiliationChanged"
