"""Bad input on every form: a Vietnamese message naming the field, a 4xx, nothing stored,
never a 500; and no POST without its CSRF token."""
from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from ca.store.models import AuditEvent, Subscriber
from ca.store.models_ra import RaRequest, RaUser
from tests import factories
from tests.ra.conftest import staff_id, units
from tests.web.test_pages_story import FORM


def _counts(db):
    with db.transaction() as s:
        return tuple(s.execute(select(func.count()).select_from(t)).scalar_one()
                     for t in (Subscriber, RaRequest, RaUser, AuditEvent))


@pytest.fixture
def officer(login_as):
    return login_as("ra.hanoi")


BAD_FORMS = [
    ({"full_name": ""}, "Họ và tên", "bắt buộc"),
    ({"full_name": "Nguyễn\x00Văn A"}, "Họ và tên", "ký tự điều khiển"),
    ({"full_name": "Nguyễn\u202eVăn A"}, "Họ và tên", "ký tự điều khiển"),
    ({"full_name": "N" * 65}, "Họ và tên", "quá dài"),
    ({"id_number": "00108512345"}, "Số CCCD/CMND/Hộ chiếu", "12 chữ số"),
    ({"id_number": "00108512345a"}, "Số CCCD/CMND/Hộ chiếu", "12 chữ số"),
    ({"id_number": "999085123456"}, "Số CCCD/CMND/Hộ chiếu", "mã tỉnh"),
    ({"id_number": "001090123456"}, "Số CCCD/CMND/Hộ chiếu", "năm sinh"),
    ({"id_type": "CMND", "id_number": "12345"}, "Số CCCD/CMND/Hộ chiếu", "9 chữ số"),
    ({"id_type": "VISA"}, "Loại giấy tờ", "không hợp lệ"),
    ({"email": "khong-phai-email"}, "Thư điện tử công vụ", "không hợp lệ"),
    ({"email": ""}, "Thư điện tử công vụ", "bắt buộc"),
    ({"mobile": "12345"}, "Số điện thoại di động", "10 chữ số"),
    ({"date_of_birth": "31/02/1985"}, "Ngày sinh", "ngày không hợp lệ"),
    ({"date_of_birth": "2999-01-01"}, "Ngày sinh", "ngày không hợp lệ"),
    ({"device_type": "FLOPPY"}, "Loại thiết bị lưu khóa", "TOKEN, SIM"),
    ({"organization_id": "999999"}, "Cơ quan, đơn vị", "không tìm thấy"),
    ({"organization_id": "abc"}, "Cơ quan, đơn vị", "không tìm thấy"),
    ({"organization_id": ""}, "Cơ quan, đơn vị", "bắt buộc"),
    ({"position": "x" * 201}, "Chức vụ", "quá dài"),
    ({"create_login": "1", "username": ""}, "Tên đăng nhập", "bắt buộc"),
    ({"create_login": "1", "username": "staff.hanoi.1"}, "Tên đăng nhập", "đã tồn tại"),
]


@pytest.mark.parametrize("bad,field,words", BAD_FORMS, ids=[str(b) for b, _, _ in BAD_FORMS])
def test_register_refuses_bad_fields(officer, db, bad, field, words):
    before = _counts(db)
    data = dict(FORM, organization_id=str(units(db, "hanoi")[0]))
    data.update(bad)
    r = officer.post("/ra/subscribers/new", data)
    html = r.get_data(as_text=True)
    assert 400 <= r.status_code < 500, html[:500]
    assert f"Trường «{field}»" in html and words in html, html[html.find('role="alert"'):][:300]
    assert _counts(db) == before


def test_register_refuses_duplicate_cccd_and_other_province_org(officer, db):
    data = dict(FORM, organization_id=str(units(db, "hanoi")[0]))
    assert officer.post("/ra/subscribers/new", data).status_code == 302
    before = _counts(db)
    r = officer.post("/ra/subscribers/new", dict(data, email="khac@hanoi.gov.vn"))
    assert r.status_code == 409 and "đã có thuê bao" in r.get_data(as_text=True)
    r = officer.post("/ra/subscribers/new", dict(data, id_number="001085999999",
                                                 organization_id=str(units(db, "quangninh")[0])))
    assert r.status_code == 400 and "Cơ quan, đơn vị" in r.get_data(as_text=True)
    assert _counts(db) == before


def test_every_form_refuses_a_post_without_csrf(login_as, db):
    officer, approver, staff = login_as("ra.hanoi"), login_as("approver.hanoi"), \
        login_as("staff.hanoi.1")
    operator = login_as("operator")
    sub = staff_id(db, "staff.hanoi.1")
    before = _counts(db)
    cases = [(officer, "/ra/subscribers/new", dict(FORM, organization_id=str(units(db, "hanoi")[0]))),
             (officer, f"/ra/subscribers/{sub}/requests/new", {"type": "revoke"}),
             (officer, "/ra/import", {}),
             (approver, "/ra/requests/1/approve", {}), (approver, "/ra/requests/1/reject", {}),
             (staff, "/me/certificates/01/lost", {}), (staff, "/me/certificates/01/renew", {}),
             (operator, "/central/domains/1/suspend", {})]
    for who, url, data in cases:
        r = who.post(url, data, csrf=False)
        assert 400 <= r.status_code < 500, (url, r.status_code)
    r = officer.post("/ra/subscribers/new", {"csrf_token": "forged"}, csrf=False)
    assert r.status_code == 400 and "Phiên biểu mẫu" in r.get_data(as_text=True)
    assert _counts(db) == before


def _request(officer, sub, data, **kw):
    return officer.post(f"/ra/subscribers/{sub}/requests/new", data,
                        content_type="multipart/form-data", **kw)


BAD_REQUESTS = [
    ({"type": "issue"}, "Yêu cầu ký chứng thư (CSR)"),
    ({"type": "issue", "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END "
                                  "CERTIFICATE REQUEST-----"}, "không đọc được"),
    ({"type": "issue", "csr_file": (io.BytesIO(b"\x30\x03\x02\x01\x00"), "x.der")},
     "không đọc được"),
    ({"type": "issue", "csr_file": (io.BytesIO(b"A" * 70000), "big.csr")}, "tệp quá lớn"),
    ({"type": "issue", "profile": "sub-ca", "csr_pem": "@CSR"}, "Mẫu chứng thư"),
    ({"type": "revoke"}, "Lý do"),
    ({"type": "revoke", "reason": "keyCompromise"}, "Chứng thư liên quan"),
    ({"type": "revoke", "reason": "keyCompromise", "serial": "abcdef"}, "Chứng thư liên quan"),
    ({"type": "renew", "csr_pem": "@CSR"}, "Chứng thư liên quan"),
    ({"type": "frobnicate"}, "Loại yêu cầu"),
    ({"type": "issue", "csr_pem": "@RSA1024"}, "không đọc được"),
]


@pytest.mark.parametrize("data,words", BAD_REQUESTS, ids=[str(i) for i in range(len(BAD_REQUESTS))])
def test_new_request_refuses_bad_input(officer, db, data, words):
    sub = staff_id(db, "staff.hanoi.2")
    data = dict(data)
    if data.get("csr_pem") == "@CSR":
        data["csr_pem"] = factories.csr(factories.key("p256")).decode()
    if data.get("csr_pem") == "@RSA1024":
        data["csr_pem"] = factories.csr(factories.key("rsa1024", fresh=False)).decode()
    before = _counts(db)
    r = _request(officer, sub, data, token_from=f"/ra/subscribers/{sub}/requests/new")
    html = r.get_data(as_text=True)
    assert 400 <= r.status_code < 500, (r.status_code, html[:300])
    assert words in html, html[html.find('role="alert"'):][:300]
    assert _counts(db) == before


def test_oversized_body_is_4xx(officer, db):
    sub = staff_id(db, "staff.hanoi.2")
    r = _request(officer, sub, {"type": "issue",
                                "csr_file": (io.BytesIO(b"A" * (9 * 1024 * 1024)), "huge.csr")},
                 token_from=f"/ra/subscribers/{sub}/requests/new")
    assert r.status_code == 413


def test_reject_and_queue_bad_params_never_500(login_as, db):
    approver = login_as("approver.hanoi")
    for url in ("/ra/requests?state=bogus&page=-4", "/ra/requests?page=abc",
                "/ra/subscribers?sort=evil&page=999999&q=%00%ff", "/ra/subscribers?q=" + "x" * 5000,
                "/ra/requests/99999999999999", "/ra/subscribers/0", "/me/certificates/zz/pem",
                "/lang/xx?next=//evil.example"):
        r = approver.get(url)
        assert r.status_code < 500, url
    r = approver.get("/lang/en?next=//evil.example")
    assert r.headers["Location"] == "/"
