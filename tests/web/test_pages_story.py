"""The RA pages end to end with the test client: register, request, approve (two people),
staff download in every format, renewal, lost token; scope and the two-person rule."""
from __future__ import annotations

import datetime as dt
import re

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from sqlalchemy import func, select

from ca.store.models import Certificate, Subscriber
from ca.store.models_ra import RaRequest
from tests import factories
from tests.ra.conftest import staff_id, units

FORM = {"full_name": "Nguyễn Văn Thành", "date_of_birth": "1985-04-12", "id_type": "CCCD",
        "id_number": "001085123456", "email": "nv.thanh@hanoi.gov.vn", "mobile": "0912345678",
        "position": "Chuyên viên", "device_type": "TOKEN"}


def register(officer, db, **over):
    data = dict(FORM, organization_id=str(units(db, "hanoi")[0]), **over)
    return officer.post("/ra/subscribers/new", data)


def new_request(who, sub_id, data, **kw):
    return who.post(f"/ra/subscribers/{sub_id}/requests/new", data,
                    content_type="multipart/form-data", **kw)


def request_id(resp) -> int:
    return int(re.search(r"/ra/requests/(\d+)", resp.headers["Location"]).group(1))


def test_register_request_approve_download_renew_lost(login_as, db):
    officer, approver = login_as("ra.hanoi"), login_as("approver.hanoi")
    r = register(officer, db, create_login="1", username="nv.thanh")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    password = re.search(r'id="new-password">([^<]+)<', html).group(1)
    with db.transaction() as s:
        sub = s.execute(select(Subscriber).where(Subscriber.id_number == FORM["id_number"])
                        ).scalar_one()
        assert sub.full_name == "Nguyễn Văn Thành"  # NFC, byte-exact
        sub_id = sub.id

    # An issue request with a DER CSR upload.
    der = factories.csr(factories.key("p256"), encoding="der")
    import io
    r = new_request(officer, sub_id, {"type": "issue", "profile": "personal",
                                      "csr_file": (io.BytesIO(der), "req.der")})
    assert r.status_code == 302, r.get_data(as_text=True)[:2000]
    rid = request_id(r)

    # The officer sees no approve button on the request; the approver does.
    page = officer.get(f"/ra/requests/{rid}").get_data(as_text=True)
    assert "/approve" not in page
    page = approver.get("/ra/requests").get_data(as_text=True)
    assert f"/ra/requests/{rid}/approve" in page
    assert "Hạn xử lý" in page
    r = approver.post(f"/ra/requests/{rid}/approve", token_from=f"/ra/requests/{rid}")
    assert r.status_code == 302
    with db.transaction() as s:
        req = s.get(RaRequest, rid)
        assert req.state == "issued", req.failure_reason
        serial = req.certificate_serial

    # The staff member logs in with the password handed over and downloads.
    from tests.web.conftest import Browser, csrf_of
    staff = Browser(officer.client.application.test_client())
    login = staff.get("/login").get_data(as_text=True)
    r = staff.client.post("/login", data={"csrf_token": csrf_of(login), "username": "nv.thanh",
                                          "password": password, "otp": ""})
    assert r.status_code == 302
    home = staff.get("/me/").get_data(as_text=True)
    assert serial in home
    pem = staff.get(f"/me/certificates/{serial}/pem")
    assert pem.status_code == 200
    cert = x509.load_pem_x509_certificate(pem.data)
    assert format(cert.serial_number, "x") == serial
    der_cert = x509.load_der_x509_certificate(staff.get(f"/me/certificates/{serial}/der").data)
    assert der_cert == cert
    chain = x509.load_pem_x509_certificates(staff.get(f"/me/certificates/{serial}/chain-pem").data)
    assert len(chain) == 3 and chain[0] == cert
    p7 = pkcs7.load_der_pkcs7_certificates(staff.get(f"/me/certificates/{serial}/p7b").data)
    assert cert in p7 and len(p7) == 3
    assert staff.get(f"/me/certificates/{serial}/zip").status_code == 400

    # Renewal with the same key (no CSR uploaded): a request the approver can approve.
    r = staff.post(f"/me/certificates/{serial}/renew", {}, content_type="multipart/form-data")
    assert r.status_code == 302, r.get_data(as_text=True)[:2000]
    with db.transaction() as s:
        renew = s.execute(select(RaRequest).where(RaRequest.type == "renew")).scalar_one()
        assert renew.created_by == "nv.thanh" and renew.state == "submitted"
        renew_id = renew.id
    assert approver.post(f"/ra/requests/{renew_id}/approve",
                         token_from=f"/ra/requests/{renew_id}").status_code == 302
    with db.transaction() as s:
        renewed = s.get(RaRequest, renew_id)
        assert renewed.state == "issued", renewed.failure_reason
        new_serial = renewed.certificate_serial

    # Lost token: a keyCompromise revocation request, approved by the RA.
    r = staff.post(f"/me/certificates/{new_serial}/lost", {}, token_from="/me/")
    assert r.status_code == 302
    with db.transaction() as s:
        lost = s.execute(select(RaRequest).where(RaRequest.type == "revoke")).scalar_one()
        assert lost.reason == "keyCompromise" and lost.target_serial == new_serial
        lost_id = lost.id
    assert approver.post(f"/ra/requests/{lost_id}/approve",
                         token_from=f"/ra/requests/{lost_id}").status_code == 302
    with db.transaction() as s:
        cert_row = s.execute(select(Certificate).where(Certificate.serial == new_serial)).scalar_one()
        assert cert_row.revocation_reason == "keyCompromise"
    assert "đã thu hồi" in staff.get("/me/").get_data(as_text=True)


def test_two_person_rule_enforced_on_the_server(login_as, db, services):
    """An approver who prepared a request sees no button, and a forged POST is refused."""
    from ca.ra import requests as ra_requests
    from tests.ra.conftest import staff_id as sid
    approver = login_as("approver.hanoi")
    sub = sid(db, "staff.hanoi.2")
    with db.transaction() as s:
        from ca.ra.roles import Caller
        from ca.store.models_ra import RaUser
        user = s.execute(select(RaUser).where(RaUser.username == "approver.hanoi")).scalar_one()
        # An approver cannot create requests; make it look as if they submitted it.
        req = ra_requests.create(s, services.clock, Caller.system("test"), {
            "type": "issue", "subscriber_id": sub, "profile": "personal",
            "csr_pem": factories.csr(factories.key("p256")).decode()}, services.profiles)
        req.submitted_by = user.username
        rid = req.id
    page = approver.get(f"/ra/requests/{rid}").get_data(as_text=True)
    assert "/approve" not in page and "chữ ký nháy" in page
    r = approver.post(f"/ra/requests/{rid}/approve", token_from=f"/ra/requests/{rid}")
    assert r.status_code == 403
    assert "chữ ký nháy" in r.get_data(as_text=True)
    with db.transaction() as s:
        assert s.get(RaRequest, rid).state == "submitted"


def test_out_of_scope_ids_answer_404(login_as, db):
    qn = login_as("ra.quangninh")
    hanoi_sub = staff_id(db, "staff.hanoi.1")
    for url in (f"/ra/subscribers/{hanoi_sub}", f"/ra/subscribers/{hanoi_sub}/requests/new",
                "/ra/subscribers/999999", "/ra/requests/999999"):
        assert qn.get(url).status_code == 404, url
    listing = qn.get("/ra/subscribers?q=Nguyen").get_data(as_text=True)
    assert "Nguyễn Thị Ánh Tuyết" not in listing  # a Hà Nội subscriber
    export = qn.get("/ra/export.csv").data.decode("utf-8-sig")
    assert "Ánh Tuyết" not in export and "Vũ Thị Thu Hương" in export
    staff = login_as("staff.hanoi.1")
    assert staff.get(f"/ra/subscribers/{hanoi_sub}").status_code == 403
    assert staff.get("/me/certificates/00/pem").status_code == 404


def test_search_without_diacritics_and_sorting(login_as):
    officer = login_as("ra.hanoi")
    for q in ("Nguyen", "nguyễn", "NGUYEN THI ANH"):
        html = officer.get(f"/ra/subscribers?q={q}").get_data(as_text=True)
        assert "Nguyễn Thị Ánh Tuyết" in html, q
    asc = officer.get("/ra/subscribers?sort=name").get_data(as_text=True)
    desc = officer.get("/ra/subscribers?sort=name&dir=desc").get_data(as_text=True)
    names = re.compile(r'/ra/subscribers/\d+">([^<]+)<')
    assert names.findall(asc) == list(reversed(names.findall(desc)))
    assert len(names.findall(asc)) == 5


def test_queue_marks_overdue(login_as, db, services, clock):
    from ca.ra import requests as ra_requests
    from ca.ra.roles import Caller
    from ca.clock import FixedClock
    sub = staff_id(db, "staff.hanoi.3")
    with db.transaction() as s:  # submitted ten days ago: past its 3 working days
        ra_requests.create(s, FixedClock(clock.now() - dt.timedelta(days=10)), Caller.system("test"), {
            "type": "issue", "subscriber_id": sub,
            "profile": "personal", "csr_pem": factories.csr(factories.key("p256")).decode()},
            services.profiles)
    approver = login_as("approver.hanoi")
    assert 'class="overdue"' in approver.get("/ra/requests").get_data(as_text=True)
    html = approver.get("/ra/requests?overdue=1&state=").get_data(as_text=True)
    assert 'class="overdue"' in html


def test_suspended_domain_reads_but_cannot_act(login_as, db):
    operator = login_as("operator")
    page = operator.get("/central/domains").get_data(as_text=True)
    from tests.ra.conftest import domain_id
    hanoi = domain_id(db, "hanoi")
    r = operator.post(f"/central/domains/{hanoi}/suspend", {}, token_from="/central/domains")
    assert r.status_code == 302 and "ra.hanoi" in page
    officer = login_as("ra.hanoi")
    assert officer.get("/ra/subscribers").status_code == 200
    before = _count(db)
    r = register(officer, db)
    assert r.status_code == 403 and "tạm dừng" in r.get_data(as_text=True)
    assert _count(db) == before
    operator.post(f"/central/domains/{hanoi}/resume", {}, token_from="/central/domains")
    assert register(officer, db).status_code == 302


def _count(db) -> int:
    with db.transaction() as s:
        return s.execute(select(func.count()).select_from(Subscriber)).scalar_one()


def test_central_pages_for_operators_only(login_as):
    operator = login_as("operator")
    for url in ("/central/domains", "/central/cas", "/central/profiles", "/central/queue"):
        assert operator.get(url).status_code == 200, url
    assert "issuing" in operator.get("/central/cas").get_data(as_text=True)
    officer = login_as("ra.hanoi")
    assert officer.get("/central/domains").status_code == 403
    assert officer.post("/central/domains/1/suspend", {}, token_from="/ra/").status_code == 403


def test_officer_renews_with_the_same_key(login_as, db, services, caller_of):
    from ca.ra import approval
    from ca.ra import requests as ra_requests
    sub = staff_id(db, "staff.hanoi.4")
    with db.transaction() as s:
        rid = ra_requests.create(s, services.clock, caller_of("ra.hanoi"), {
            "type": "issue", "subscriber_id": sub, "profile": "personal",
            "csr_pem": factories.csr(factories.key("p256")).decode()}, services.profiles).id
    done = approval.approve(services.db, services.clock, caller_of("approver.hanoi"), rid,
                            services.issuance())
    officer = login_as("ra.hanoi")
    r = new_request(officer, sub, {"type": "renew", "serial": done.certificate_serial},
                    token_from=f"/ra/subscribers/{sub}/requests/new")
    assert r.status_code == 302, r.get_data(as_text=True)[-800:]
    with db.transaction() as s:
        renew = s.get(RaRequest, request_id(r))
        first = s.get(RaRequest, rid)
        assert renew.type == "renew" and renew.csr_pem == first.csr_pem
