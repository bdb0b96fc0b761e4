"""Transfer pages: the form on the subscriber page, the incoming/outgoing page with accept,
refuse and withdraw, the history timeline, organisation move/merge; CSRF on every form,
Vietnamese errors, scope (a third province gets 404 like a missing object)."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from ca.ra import transfers
from ca.store.models import Organization, Subscriber
from ca.store.models_ra import RaRequest
from tests.ra.conftest import domain_id, staff_id, units
from tests.ra.test_workflow import issue_via_api
from tests.transfers.conftest import count, state
from tests.web.conftest import csrf_of


def _sub(db, sub_id):
    with db.transaction() as s:
        x = s.get(Subscriber, sub_id)
        return x.domain_id, x.organization_id


def test_within_province_by_page(login_as, api_as, db):
    sub = staff_id(db, "staff.hanoi.1")
    issue_via_api(api_as("ra.hanoi"), api_as("approver.hanoi"), sub)
    officer = login_as("ra.hanoi")
    page = officer.get(f"/ra/subscribers/{sub}").get_data(as_text=True)
    assert f"/ra/subscribers/{sub}/transfer" in page and "Chuyển công tác" in page
    form = officer.get(f"/ra/subscribers/{sub}/transfer")
    assert form.status_code == 200
    target = units(db, "hanoi")[5]
    # without the CSRF token nothing happens
    before = state(db)
    r = officer.post(f"/ra/subscribers/{sub}/transfer", {"organization_id": target}, csrf=False)
    assert r.status_code == 400 and "Phiên biểu mẫu" in r.get_data(as_text=True)
    assert state(db) == before
    # the same unit: a Vietnamese message, nothing changed
    _, own = _sub(db, sub)
    r = officer.post(f"/ra/subscribers/{sub}/transfer", {"organization_id": own})
    assert r.status_code == 400 and "không có gì thay đổi" in r.get_data(as_text=True)
    r = officer.post(f"/ra/subscribers/{sub}/transfer", {"organization_id": "999999"})
    assert r.status_code == 400 and "không tìm thấy cơ quan" in r.get_data(as_text=True)
    assert state(db) == before
    r = officer.post(f"/ra/subscribers/{sub}/transfer",
                     {"organization_id": target, "reason": "Điều động"})
    assert r.status_code == 302, r.get_data(as_text=True)[:400]
    assert _sub(db, sub)[1] == target
    assert count(db, RaRequest, RaRequest.subscriber_id == sub, RaRequest.type == "change",
                 RaRequest.state == "submitted") == 1
    timeline = officer.get(f"/ra/subscribers/{sub}/timeline").get_data(as_text=True)
    assert "Phòng Kế hoạch - Tài chính" in timeline and "Văn phòng" in timeline


def test_between_provinces_by_page(login_as, db, officers):
    sub = staff_id(db, "staff.hanoi.3")
    qn_unit = units(db, "quangninh")[2]
    hanoi = login_as("ra.hanoi")
    form = hanoi.get(f"/ra/subscribers/{sub}/transfer?domain_id={domain_id(db, 'quangninh')}")
    html = form.get_data(as_text=True)
    assert form.status_code == 200 and f'value="{qn_unit}"' in html
    r = hanoi.post(f"/ra/subscribers/{sub}/transfer",
                   {"organization_id": qn_unit, "reason": "Luân chuyển cán bộ"},
                   token_from=f"/ra/subscribers/{sub}/transfer")
    assert r.status_code == 302
    assert _sub(db, sub)[0] == domain_id(db, "hanoi")  # still Hà Nội's until accepted
    out = hanoi.get("/ra/transfers").get_data(as_text=True)
    assert "Lê Hoàng Phương" in out and "Rút đề nghị" in out
    [tid] = re.findall(r'id="transfer-(\d+)"', out)

    qn = login_as("ra.quangninh")
    incoming = qn.get("/ra/transfers").get_data(as_text=True)
    assert "Lê Hoàng Phương" in incoming and "Thành phố Hà Nội" in incoming
    assert "Chuyên viên" in incoming and "Tiếp nhận" in incoming
    with db.transaction() as s:
        person = s.get(Subscriber, sub)
        secret_bits = (person.id_number, person.email)
    assert not any(b in incoming for b in secret_bits)
    assert qn.get(f"/ra/subscribers/{sub}").status_code == 404
    hp, qn2 = login_as("ra.haiphong"), login_as("ra.quangninh.2")
    # accept without CSRF: refused, nothing changed
    before = state(db)
    r = qn.post(f"/ra/transfers/{tid}/accept", csrf=False)
    assert r.status_code == 400 and state(db) == before
    # the source cannot accept its own release
    r = hanoi.post(f"/ra/transfers/{tid}/accept", token_from="/ra/transfers")
    assert r.status_code == 403 and "đơn vị RA nhận" in r.get_data(as_text=True)
    # a third province: like a missing transfer
    assert hp.post(f"/ra/transfers/{tid}/accept", token_from="/ra/transfers").status_code == 404
    assert hp.post("/ra/transfers/999999/accept", token_from="/ra/transfers").status_code == 404
    assert state(db) == before
    r = qn.post(f"/ra/transfers/{tid}/accept", token_from="/ra/transfers")
    assert r.status_code == 302, r.get_data(as_text=True)[:400]
    assert _sub(db, sub) == (domain_id(db, "quangninh"), qn_unit)
    # twice: a Vietnamese 409
    r = qn2.post(f"/ra/transfers/{tid}/accept", token_from="/ra/transfers")
    assert r.status_code == 409 and "đã được tiếp nhận" in r.get_data(as_text=True)
    # the source keeps read access to its period, on a page of its own
    assert hanoi.get(f"/ra/subscribers/{sub}").status_code == 404
    past = hanoi.get(f"/ra/subscribers/{sub}/timeline")
    assert past.status_code == 200
    body = past.get_data(as_text=True)
    assert 'id="former"' in body and "Lê Hoàng Phương" in body
    assert "Quảng Ninh" not in body.split('id="placements"')[1].split("</table>")[0]
    assert hp.get(f"/ra/subscribers/{sub}/timeline").status_code == 404
    full = qn.get(f"/ra/subscribers/{sub}/timeline").get_data(as_text=True)
    assert "Thành phố Hà Nội" in full and "Tỉnh Quảng Ninh" in full


def test_refuse_and_withdraw_by_page(login_as, db):
    sub = staff_id(db, "staff.hanoi.4")
    hanoi, qn = login_as("ra.hanoi"), login_as("ra.quangninh")
    for action, browser, expected in (("refuse", qn, "refused"), ("withdraw", hanoi, "withdrawn")):
        r = hanoi.post(f"/ra/subscribers/{sub}/transfer",
                       {"organization_id": units(db, "quangninh")[0]})
        assert r.status_code == 302
        [tid] = re.findall(r'id="transfer-(\d+)".*?Rút đề nghị',
                           hanoi.get("/ra/transfers").get_data(as_text=True), re.S)[:1]
        before = state(db)
        assert browser.post(f"/ra/transfers/{tid}/{action}", csrf=False).status_code == 400
        assert state(db) == before
        r = browser.post(f"/ra/transfers/{tid}/{action}", {"note": "Không phù hợp"},
                         token_from="/ra/transfers")
        assert r.status_code == 302
        with db.transaction() as s:
            from ca.store.models_transfer import SubscriberTransfer
            assert s.get(SubscriberTransfer, int(tid)).state == expected
    # a second release while one is pending: Vietnamese 409
    r = hanoi.post(f"/ra/subscribers/{sub}/transfer", {"organization_id": units(db, "quangninh")[0]})
    assert r.status_code == 302
    r = hanoi.post(f"/ra/subscribers/{sub}/transfer", {"organization_id": units(db, "haiphong")[0]})
    assert r.status_code == 409 and "chờ tiếp nhận" in r.get_data(as_text=True)


def _hanoi_agencies(db):
    hid = domain_id(db, "hanoi")
    with db.transaction() as s:
        ags = s.execute(select(Organization.id).where(
            Organization.domain_id == hid, Organization.kind == "agency",
            Organization.level == 2).order_by(Organization.id)).scalars().all()
        unit = s.execute(select(Organization.id).where(Organization.parent_id == ags[0])
                         .order_by(Organization.id)).scalars().first()
    return ags, unit


def test_organization_move_and_merge_pages(login_as, db):
    ags, unit = _hanoi_agencies(db)
    officer = login_as("ra.hanoi")
    page = officer.get(f"/ra/organizations/{unit}")
    assert page.status_code == 200 and 'id="move"' in page.get_data(as_text=True)
    assert f"/ra/organizations/{unit}" in officer.get("/ra/organizations").get_data(as_text=True)
    before = state(db)
    r = officer.post(f"/ra/organizations/{unit}/move", {"parent_id": ags[1], "reason": "x"},
                     csrf=False)
    assert r.status_code == 400 and state(db) == before
    r = officer.post(f"/ra/organizations/{ags[0]}/move", {"parent_id": unit, "reason": "x"},
                     token_from="/ra/organizations")
    assert r.status_code == 400 and "đơn vị cấp dưới" in r.get_data(as_text=True)
    r = officer.post(f"/ra/organizations/{unit}/move", {"parent_id": ags[1], "reason": ""},
                     token_from="/ra/organizations")
    assert r.status_code == 400 and "Lý do" in r.get_data(as_text=True)
    assert state(db) == before
    r = officer.post(f"/ra/organizations/{unit}/move",
                     {"parent_id": ags[1], "reason": "Sắp xếp lại"},
                     token_from="/ra/organizations")
    assert r.status_code == 302
    with db.transaction() as s:
        assert s.get(Organization, unit).parent_id == ags[1]
    r = officer.post(f"/ra/organizations/{ags[2]}/merge", {"into_id": "999999", "reason": "x"},
                     token_from="/ra/organizations")
    assert r.status_code == 400 and "không tìm thấy cơ quan" in r.get_data(as_text=True)
    r = officer.post(f"/ra/organizations/{ags[2]}/merge",
                     {"into_id": ags[3], "reason": "Hợp nhất"},
                     token_from="/ra/organizations")
    assert r.status_code == 302
    with db.transaction() as s:
        assert s.get(Organization, ags[2]).active is False
    versions = officer.get(f"/ra/organizations/{ags[2]}").get_data(as_text=True)
    assert "Hợp nhất" in versions and 'id="merge"' not in versions
    # the approver reads but does not edit
    approver = login_as("approver.hanoi")
    assert approver.get(f"/ra/organizations/{unit}").status_code == 200
    assert approver.post(f"/ra/organizations/{unit}/move", {"parent_id": ags[0], "reason": "x"},
                         token_from=f"/ra/organizations/{unit}").status_code == 403


MISSING = {"subscriber_id": "999999", "transfer_id": "999999", "organization_id": "999999"}


@pytest.mark.parametrize("who", ["ra.quangninh", "approver.quangninh", "staff.quangninh.1"])
def test_hanoi_objects_answer_like_missing_ones(app, login_as, db, services, caller_of, who):
    """Every page of this area, asked by another province for a Hà Nội object (a person, a
    release to a third province, a unit), answers like a missing one and changes nothing."""
    sub = staff_id(db, "staff.hanoi.2")
    hanoi_officer = caller_of("ra.hanoi")
    hp_unit = units(db, "haiphong")[0]
    with db.transaction() as s:
        t = transfers.transfer(s, services.clock, hanoi_officer, sub, hp_unit, services.profiles)
        tid = t.id
    hanoi = {"subscriber_id": str(sub), "transfer_id": str(tid),
             "organization_id": str(units(db, "hanoi")[0])}
    user = login_as(who)
    token = csrf_of(user.get("/me/" if who.startswith("staff") else "/ra/")
                    .get_data(as_text=True))
    before = state(db)
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("transfer_web.") or not rule.arguments:
            continue
        assert not set(rule.arguments) - set(MISSING), rule.rule
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            answers = []
            for values in (hanoi, MISSING):
                url = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: values[m.group(1)],
                             rule.rule)
                r = user.client.open(url, method=method, data={
                    "csrf_token": token, "organization_id": units(db, "quangninh")[0],
                    "parent_id": "", "into_id": "1", "reason": "x"})
                assert r.status_code in (403, 404), (who, method, url, r.status_code)
                assert "Trần Văn Đức" not in r.get_data(as_text=True)
                answers.append(r.status_code)
            assert answers[0] == answers[1], (who, method, rule.rule, answers)
            checked += 1
    assert checked >= 8
    assert state(db) == before


def test_transfer_pages_in_english(login_as, db):
    officer = login_as("ra.hanoi")
    officer.get("/lang/en")
    html = officer.get("/ra/transfers").get_data(as_text=True)
    assert "Transfers between RA domains" in html and "Outgoing releases" in html
    sub = staff_id(db, "staff.hanoi.1")
    html = officer.get(f"/ra/subscribers/{sub}/transfer").get_data(as_text=True)
    assert "Within the province or city (this RA domain)" in html
    r = officer.post(f"/ra/subscribers/{sub}/transfer", {"organization_id": "999999"})
    assert r.status_code == 400 and "Chuyển" not in r.get_data(as_text=True).split("<main>")[1]
