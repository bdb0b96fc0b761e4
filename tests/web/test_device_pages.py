"""Key-device pages: restore with the code shown once, queue, lost tokens, scope, bad input."""
from __future__ import annotations

import re

from sqlalchemy import func, select

from ca.store.models import AuditEvent
from ca.store.models_ra import RaRequest
from ca.store.models_restore import RestoreRequest
from ca.store.models_tokens import KeyDevice
from tests.ra.conftest import api_as, staff_id, token_for  # noqa: F401  (shared fixtures)
from tests.tokens.test_done_when import _dump_all
from tests.tokens.test_restore_workflow import make_device


def _events(db) -> int:
    with db.transaction() as s:
        return s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()


def _restore_id(db, device_id) -> int:
    with db.transaction() as s:
        return s.execute(select(RestoreRequest.request_id).where(
            RestoreRequest.device_id == device_id)).scalar_one()


def test_staff_restore_identity_approval_code_once(login_as, db, clock, issuance):
    dev = make_device(db, clock, issuance, "staff.hanoi.1")
    staff, officer = login_as("staff.hanoi.1"), login_as("ra.hanoi")
    approver = login_as("approver.hanoi")
    page = staff.get("/me/devices").get_data(as_text=True)
    assert f'id="device-{dev}"' in page and "đang dùng" in page
    r = staff.post(f"/me/devices/{dev}/restore", token_from="/me/devices")
    assert r.status_code == 302
    rid = _restore_id(db, dev)
    assert f'id="restore-{rid}"' in staff.get("/me/devices").get_data(as_text=True)

    queue = officer.get("/ra/restore").get_data(as_text=True)
    assert f'id="restore-{rid}"' in queue and "chưa kiểm tra" in queue
    assert "quá hạn" not in queue
    # Approval without the identity check: a Vietnamese message, nothing changed.
    before = _events(db)
    r = approver.post(f"/ra/restore/{rid}/approve", token_from=f"/ra/restore/{rid}")
    assert r.status_code == 422
    assert "Chưa ghi nhận việc kiểm tra danh tính" in r.get_data(as_text=True)
    assert _events(db) == before
    # Bad identity input: 400 in Vietnamese, nothing stored.
    r = officer.post(f"/ra/restore/{rid}/identity", {"method": "đoán"},
                     token_from=f"/ra/restore/{rid}")
    assert r.status_code == 400 and "giá trị không hợp lệ" in r.get_data(as_text=True)
    r = officer.post(f"/ra/restore/{rid}/identity", {"method": "video_call",
                                                      "checked_at": "31/02/2026"},
                     token_from=f"/ra/restore/{rid}")
    assert r.status_code == 400 and "Thời điểm kiểm tra" in r.get_data(as_text=True)
    r = officer.post(f"/ra/restore/{rid}/identity", {"method": "video_call"}, csrf=False)
    assert r.status_code == 400
    assert _events(db) == before
    r = officer.post(f"/ra/restore/{rid}/identity",
                     {"method": "cccd_in_person", "note": "Đã đối chiếu CCCD"},
                     token_from=f"/ra/restore/{rid}")
    assert r.status_code == 302
    # The staff member who asked cannot approve (no button, refused by the service).
    page = officer.get(f"/ra/restore/{rid}").get_data(as_text=True)
    assert "Đối chiếu CCCD trực tiếp" in page and f"/ra/restore/{rid}/approve" not in page

    r = approver.post(f"/ra/restore/{rid}/approve", token_from=f"/ra/restore/{rid}")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    code = re.search(r'id="unblock-code">([^<]+)<', r.get_data(as_text=True)).group(1)
    assert len(code) == 24
    with db.transaction() as s:
        assert s.get(RaRequest, rid).state == "done"
        assert s.get(KeyDevice, dev).state == "locked"
    # Shown once: not on the request page again, nowhere in the database.
    again = approver.get(f"/ra/restore/{rid}").get_data(as_text=True)
    assert code not in again and "device.unblock.authorise" in again
    assert code.encode() not in _dump_all(db)
    assert code.replace("-", "").encode() not in _dump_all(db)
    r = approver.post(f"/ra/restore/{rid}/approve", token_from=f"/ra/restore/{rid}")
    assert r.status_code == 409 and code not in r.get_data(as_text=True)


def test_overdue_marking_and_device_history(login_as, db, clock, issuance):
    dev = make_device(db, clock, issuance, "staff.hanoi.4")
    officer = login_as("ra.hanoi")
    r = officer.post(f"/ra/devices/{dev}/restore", token_from=f"/ra/devices/{dev}")
    assert r.status_code == 302
    rid = _restore_id(db, dev)
    clock.advance(days=5)
    officer = login_as("ra.hanoi")  # the session expired meanwhile
    queue = officer.get("/ra/restore").get_data(as_text=True)
    assert re.search(rf'id="restore-{rid}" class="overdue"', queue) and "quá hạn" in queue
    hist = officer.get(f"/ra/devices/{dev}").get_data(as_text=True)
    assert "device.state" in hist and "đã khởi tạo → đang dùng" in hist


def test_remote_key_pin_page(login_as, db, clock, issuance, caller_of):
    from ca.ra import approval, restore
    from ca.tokens import remote_pin
    dev = make_device(db, clock, issuance, "staff.hanoi.5", device_type="HSM", with_cert=False)
    officer = caller_of("ra.hanoi")
    with db.transaction() as s:
        remote_pin.set_initial_pin(s, dev, "482916", actor="test", at=clock.now())
        rid = restore.create(s, clock, officer, subscriber_id=staff_id_in(s, "staff.hanoi.5"),
                             device_id=dev, profiles={}).id
        restore.record_identity_check(s, clock, officer, rid, method="video_call")
    code = approval.approve(db, clock, caller_of("approver.hanoi"), rid, None).unblock_code
    staff = login_as("staff.hanoi.5")
    url = f"/me/devices/{dev}/pin"
    before = _events(db)
    for form, status, text in (
            ({"code": code, "new_pin": "730518", "new_pin2": "730519"}, 400, "không khớp"),
            ({"code": code, "new_pin": "111111", "new_pin2": "111111"}, 422, "6–16 chữ số"),
            ({"code": "ABC", "new_pin": "730518", "new_pin2": "730518"}, 400, "20 ký tự")):
        r = staff.post(url, form)
        assert r.status_code == status and text in r.get_data(as_text=True)
    assert _events(db) == before
    r = staff.post(url, {"code": code, "new_pin": "730518", "new_pin2": "730518"})
    assert r.status_code == 302
    remote_pin.verify_pin(db, clock, dev, "730518", actor="test")
    r = staff.post(url, {"code": code, "new_pin": "640297", "new_pin2": "640297"})
    assert r.status_code == 403 and "đã được sử dụng" in r.get_data(as_text=True)


def staff_id_in(session, username: str) -> int:
    from ca.store.models import Subscriber
    return session.execute(select(Subscriber.id).where(
        Subscriber.username == username)).scalar_one()


def test_lost_token_pages_raise_revoke_requests(login_as, db, clock, issuance):
    dev = make_device(db, clock, issuance, "staff.hanoi.2")
    staff = login_as("staff.hanoi.2")
    r = staff.post(f"/me/devices/{dev}/lost", {"state": "vứt"}, token_from="/me/devices")
    assert r.status_code == 400
    r = staff.post(f"/me/devices/{dev}/lost", {"state": "lost"}, token_from="/me/devices")
    assert r.status_code == 302
    with db.transaction() as s:
        assert s.get(KeyDevice, dev).state == "lost"
        reqs = s.execute(select(RaRequest).where(
            RaRequest.type == "revoke", RaRequest.created_by == "staff.hanoi.2")).scalars().all()
        assert [(q.reason, q.state) for q in reqs] == [("keyCompromise", "submitted")]
    # The officer action on another device.
    dev2 = make_device(db, clock, issuance, "staff.hanoi.3")
    officer = login_as("ra.hanoi")
    r = officer.post(f"/ra/devices/{dev2}/end", {"state": "destroyed", "note": "Hỏng chip"},
                     token_from=f"/ra/devices/{dev2}")
    assert r.status_code == 302
    with db.transaction() as s:
        assert s.get(KeyDevice, dev2).state == "destroyed"


def test_pages_are_scoped(login_as, db, clock, issuance):
    dev = make_device(db, clock, issuance, "staff.hanoi.1")
    hanoi_staff = login_as("staff.hanoi.1")
    hanoi_staff.post(f"/me/devices/{dev}/restore", token_from="/me/devices")
    rid = _restore_id(db, dev)
    qn, qn_staff = login_as("ra.quangninh"), login_as("staff.quangninh.1")
    other = login_as("staff.hanoi.2")
    before = _events(db)
    for who, gets, posts in (
            (qn, [f"/ra/restore/{rid}", f"/ra/devices/{dev}"],
             [f"/ra/restore/{rid}/identity", f"/ra/devices/{dev}/restore",
              f"/ra/devices/{dev}/end"]),
            (qn_staff, [f"/me/devices/{dev}/pin"],
             [f"/me/devices/{dev}/restore", f"/me/devices/{dev}/lost"]),
            (other, [f"/me/devices/{dev}/pin"],
             [f"/me/devices/{dev}/restore", f"/me/devices/{dev}/lost"])):
        for url in gets:
            assert who.get(url).status_code == 404, url
            assert who.get(url.replace(str(dev), "999999").replace(str(rid), "999999")
                           ).status_code == 404
        home = "/me/devices" if who is not qn else "/ra/restore"
        for url in posts:
            assert who.post(url, {"method": "video_call", "state": "lost"},
                            token_from=home).status_code == 404, url
    assert f'id="restore-{rid}"' not in qn.get("/ra/restore").get_data(as_text=True)
    assert f'id="device-{dev}"' not in other.get("/me/devices").get_data(as_text=True)
    assert _events(db) == before
    with db.transaction() as s:
        assert s.get(KeyDevice, dev).state == "issued"


def test_api_approve_returns_the_code_once(api_as, db, clock, issuance):
    dev = make_device(db, clock, issuance, "staff.hanoi.1")
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    st, err = officer.post("/api/v1/requests", {"type": "restore", "device_id": "x",
                                                "subscriber_id": staff_id(db, "staff.hanoi.1")})
    assert st == 400 and err["error"]["code"] == "wrong_type"
    st, req = officer.post("/api/v1/requests", {"type": "restore", "device_id": dev,
                                                "subscriber_id": staff_id(db, "staff.hanoi.1")})
    assert st == 201
    st, err = approver.post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 422 and err["error"]["code"] == "identity_check_required"
    from ca.ra import restore
    from tests.ra.conftest import Api  # noqa: F401
    with db.transaction() as s:
        from ca.ra.roles import Caller
        from ca.store.models_ra import RaUser
        who = Caller.of(s.execute(select(RaUser).where(RaUser.username == "ra.hanoi"))
                        .scalar_one())
        restore.record_identity_check(s, clock, who, req["id"], method="cccd_in_person")
    st, done = approver.post(f"/api/v1/requests/{req['id']}/approve")
    assert st == 200 and done["state"] == "done" and len(done["unblock_code"]) == 24
    st, got = officer.get(f"/api/v1/requests/{req['id']}")
    assert "unblock_code" not in got


def test_generic_request_page_approval_shows_the_code(login_as, db, clock, issuance, caller_of):
    from ca.ra import restore
    dev = make_device(db, clock, issuance, "staff.hanoi.1")
    officer = caller_of("ra.hanoi")
    with db.transaction() as s:
        rid = restore.create(s, clock, officer, subscriber_id=staff_id_in(s, "staff.hanoi.1"),
                             device_id=dev, profiles={}).id
        restore.record_identity_check(s, clock, officer, rid, method="agency_letter")
    approver = login_as("approver.hanoi")
    r = approver.post(f"/ra/requests/{rid}/approve", token_from=f"/ra/requests/{rid}")
    assert r.status_code == 200
    assert re.search(r'id="unblock-code">[A-Z2-9-]{24}<', r.get_data(as_text=True))


def test_generic_request_page_sends_restore_to_the_identity_check(login_as, db, clock, issuance,
                                                                   caller_of):
    """Before the identity check, the general request page offers no approve button (it would
    only fail) but a link to the restore page where the check is recorded."""
    from ca.ra import restore
    dev = make_device(db, clock, issuance, "staff.hanoi.1")
    officer = caller_of("ra.hanoi")
    with db.transaction() as s:
        rid = restore.create(s, clock, officer, subscriber_id=staff_id_in(s, "staff.hanoi.1"),
                             device_id=dev, profiles={}).id
    approver = login_as("approver.hanoi")
    html = approver.get(f"/ra/requests/{rid}").get_data(as_text=True)
    assert f'action="/ra/requests/{rid}/approve"' not in html
    assert f'href="/ra/restore/{rid}"' in html
    listing = approver.get("/ra/requests").get_data(as_text=True)
    assert f'href="/ra/restore/{rid}"' in listing
    assert f'action="/ra/requests/{rid}/approve"' not in listing
    with db.transaction() as s:
        restore.record_identity_check(s, clock, officer, rid, method="agency_letter")
    html = approver.get(f"/ra/requests/{rid}").get_data(as_text=True)
    assert f'action="/ra/requests/{rid}/approve"' in html
