"""Every bad transfer input is a clear 4xx and changes nothing (rows, states, audit events)."""
from __future__ import annotations

import pytest
from sqlalchemy import update

from ca.store.models import RaDomain
from tests.ra.conftest import staff_id, units
from tests.transfers.conftest import state


def _set_status(db, code, status):
    with db.transaction() as s:
        s.execute(update(RaDomain).where(RaDomain.code == code).values(status=status))


def _refused(db, call, status, code):
    before = state(db)
    st, body = call()
    assert st == status, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert state(db) == before, "a refused action changed something"
    return body


@pytest.fixture
def who(api_as, officers):
    """API clients made before anything is measured (a token is itself an audited event)."""
    names = ("ra.hanoi", "ra.hanoi.2", "approver.hanoi", "ra.quangninh", "ra.quangninh.2",
             "approver.quangninh", "ra.haiphong", "operator")
    return {n: api_as(n) for n in names}


@pytest.fixture
def released(who, db):
    """staff.hanoi.5 released by ra.hanoi to a Quảng Ninh unit."""
    sub = staff_id(db, "staff.hanoi.5")
    st, tr = who["ra.hanoi"].post(f"/api/v1/subscribers/{sub}/transfer",
                                     {"organization_id": units(db, "quangninh")[0]})
    assert st == 202, tr
    return sub, tr["id"]


def test_transfer_targets(who, db):
    hanoi = who["ra.hanoi"]
    sub = staff_id(db, "staff.hanoi.1")
    url = f"/api/v1/subscribers/{sub}/transfer"
    with db.transaction() as s:
        from ca.store.models import Subscriber
        own_unit = s.get(Subscriber, sub).organization_id
    _refused(db, lambda: hanoi.post(url, {"organization_id": 999999}), 400,
             "unknown_organization")
    _refused(db, lambda: hanoi.post(url, {"organization_id": own_unit}), 400, "no_change")
    _refused(db, lambda: hanoi.post(url, {"organization_id": "12"}), 400, "wrong_type")
    _refused(db, lambda: hanoi.post(url, {"organization_id": 2**40}), 400, "unknown_organization")
    _refused(db, lambda: hanoi.post(url, {"organization_id": units(db, "hanoi")[1],
                                          "why": "x"}), 400, "unknown_field")
    _refused(db, lambda: hanoi.post(url, {"organization_id": units(db, "hanoi")[1],
                                          "reason": "a\u202eb"}), 400, "control_character")
    # a person of another province: 404 like a missing one
    qn_sub = staff_id(db, "staff.quangninh.1")
    _refused(db, lambda: hanoi.post(f"/api/v1/subscribers/{qn_sub}/transfer",
                                    {"organization_id": units(db, "hanoi")[1]}), 404, "not_found")
    # the approver may not move people
    _refused(db, lambda: who["approver.hanoi"].post(url, {"organization_id":
                                                             units(db, "hanoi")[1]}),
             403, "forbidden")


@pytest.mark.parametrize("status", ["merged", "suspended"])
def test_release_to_unavailable_domain(who, db, status):
    _set_status(db, "haiphong", status)
    sub = staff_id(db, "staff.hanoi.1")
    body = _refused(db, lambda: who["ra.hanoi"].post(
        f"/api/v1/subscribers/{sub}/transfer", {"organization_id": units(db, "haiphong")[0]}),
        400, "domain_unavailable")
    assert status in body["error"]["message"]


def test_suspended_source_cannot_release(who, db):
    _set_status(db, "hanoi", "suspended")
    sub = staff_id(db, "staff.hanoi.1")
    _refused(db, lambda: who["ra.hanoi"].post(
        f"/api/v1/subscribers/{sub}/transfer", {"organization_id": units(db, "haiphong")[0]}),
        403, "domain_suspended")


def test_second_release_and_move_while_released(who, db, released):
    sub, _ = released
    hanoi = who["ra.hanoi"]
    url = f"/api/v1/subscribers/{sub}/transfer"
    _refused(db, lambda: hanoi.post(url, {"organization_id": units(db, "haiphong")[0]}),
             409, "transfer_pending")
    _refused(db, lambda: hanoi.post(url, {"organization_id": units(db, "hanoi")[2]}),
             409, "transfer_pending")


def test_who_may_answer_a_release(who, db, released):
    _, tid = released
    url = f"/api/v1/transfers/{tid}"
    # a third province: no such transfer
    body = _refused(db, lambda: who["ra.haiphong"].post(url + "/accept"), 404, "not_found")
    missing = who["ra.haiphong"].post("/api/v1/transfers/999999/accept")[1]
    assert body["error"]["message"].replace(str(tid), "X") == \
        missing["error"]["message"].replace("999999", "X")
    # the source side (even another officer) does not accept or refuse
    _refused(db, lambda: who["ra.hanoi.2"].post(url + "/accept"), 403, "not_destination")
    _refused(db, lambda: who["ra.hanoi"].post(url + "/refuse"), 403, "not_destination")
    # the destination does not withdraw; an approver does not accept
    _refused(db, lambda: who["ra.quangninh"].post(url + "/withdraw"), 403, "not_source")
    _refused(db, lambda: who["approver.quangninh"].post(url + "/accept"), 403, "forbidden")
    # placing the person in a unit outside the destination
    _refused(db, lambda: who["ra.quangninh"].post(url + "/accept", {
        "organization_id": units(db, "hanoi")[0]}), 400, "unknown_organization")
    _refused(db, lambda: who["ra.quangninh"].post(url + "/accept", {"x": 1}), 400,
             "unknown_field")


def test_accept_twice(who, db, released):
    _, tid = released
    qn = who["ra.quangninh"]
    assert qn.post(f"/api/v1/transfers/{tid}/accept")[0] == 200
    _refused(db, lambda: qn.post(f"/api/v1/transfers/{tid}/accept"), 409, "transfer_accepted")
    _refused(db, lambda: who["ra.quangninh.2"].post(f"/api/v1/transfers/{tid}/accept"),
             409, "transfer_accepted")
    _refused(db, lambda: who["ra.hanoi"].post(f"/api/v1/transfers/{tid}/withdraw"),
             409, "transfer_accepted")
    _refused(db, lambda: qn.post(f"/api/v1/transfers/{tid}/refuse"), 409, "transfer_accepted")


def test_accept_after_withdraw(who, db, released):
    _, tid = released
    assert who["ra.hanoi"].post(f"/api/v1/transfers/{tid}/withdraw")[0] == 200
    _refused(db, lambda: who["ra.quangninh"].post(f"/api/v1/transfers/{tid}/accept"),
             409, "transfer_withdrawn")
    _refused(db, lambda: who["ra.hanoi"].post(f"/api/v1/transfers/{tid}/withdraw"),
             409, "transfer_withdrawn")


def test_own_release_cannot_be_accepted(who, db):
    """Only a central operator sees both sides; they still cannot be both parties."""
    op = who["operator"]
    sub = staff_id(db, "staff.hanoi.4")
    st, tr = op.post(f"/api/v1/subscribers/{sub}/transfer",
                     {"organization_id": units(db, "quangninh")[0]})
    assert st == 202, tr
    _refused(db, lambda: op.post(f"/api/v1/transfers/{tr['id']}/accept"), 403, "own_release")
    st, acc = who["ra.quangninh"].post(f"/api/v1/transfers/{tr['id']}/accept")
    assert st == 200 and acc["state"] == "accepted"


def test_destination_merged_after_release(who, db, released):
    _, tid = released
    _set_status(db, "quangninh", "suspended")
    _refused(db, lambda: who["ra.quangninh"].post(f"/api/v1/transfers/{tid}/accept"),
             403, "domain_suspended")


def test_list_filters(who, db, released):
    qn = who["ra.quangninh"]
    for bad in ("direction=sideways", "state=open", "foo=1"):
        st, body = qn.get(f"/api/v1/transfers?{bad}")
        assert st == 400, (bad, body)
    st, rows = qn.get("/api/v1/transfers?state=released&direction=incoming")
    assert st == 200 and len(rows) == 1


def test_organization_move_and_merge(who, db):
    hanoi = who["ra.hanoi"]
    from ca.store.models import Organization
    with db.transaction() as s:
        from sqlalchemy import select
        from ca.store.models import RaDomain as D
        hid = s.execute(select(D.id).where(D.code == "hanoi")).scalar_one()
        agencies = s.execute(select(Organization).where(
            Organization.domain_id == hid, Organization.kind == "agency",
            Organization.level == 2).order_by(Organization.id)).scalars().all()
        a1, a2 = agencies[0].id, agencies[1].id
        unit = s.execute(select(Organization.id).where(Organization.parent_id == a1)
                         .order_by(Organization.id)).scalars().first()
    url = f"/api/v1/organizations/{unit}"
    _refused(db, lambda: hanoi.post(url + "/move", {"parent_id": 999999, "reason": "x"}), 400,
             "unknown_organization")
    _refused(db, lambda: hanoi.post(url + "/move", {"parent_id": a1, "reason": "x"}), 400,
             "no_change")
    _refused(db, lambda: hanoi.post(f"/api/v1/organizations/{a1}/move",
                                    {"parent_id": unit, "reason": "x"}), 400, "cycle")
    _refused(db, lambda: hanoi.post(url + "/move", {"parent_id": a2}), 400, "required")
    _refused(db, lambda: hanoi.post(url + "/move", {"reason": "x"}), 400, "required")
    _refused(db, lambda: hanoi.post(url + "/move", {"parent_id": units(db, "quangninh")[0],
                                                    "reason": "x"}), 400, "unknown_organization")
    st, ver = hanoi.post(url + "/move", {"parent_id": a2, "reason": "Sắp xếp lại"})
    assert st == 200 and ver["parent_id"] == a2 and ver["version"] == 2, ver
    _refused(db, lambda: hanoi.post(f"/api/v1/organizations/{a1}/merge",
                                    {"into_id": 999999, "reason": "x"}), 400,
             "unknown_organization")
    _refused(db, lambda: hanoi.post(f"/api/v1/organizations/{a1}/merge",
                                    {"into_id": a1, "reason": "x"}), 400, "cycle")
    _refused(db, lambda: hanoi.post(f"/api/v1/organizations/{a1}/merge",
                                    {"into_id": units(db, "quangninh")[0], "reason": "x"}),
             400, "unknown_organization")
    _refused(db, lambda: who["approver.hanoi"].post(
        f"/api/v1/organizations/{a1}/merge", {"into_id": a2, "reason": "x"}), 403, "forbidden")
    st, merged = hanoi.post(f"/api/v1/organizations/{a1}/merge",
                            {"into_id": a2, "reason": "Hợp nhất theo Nghị quyết"})
    assert st == 200, merged
    assert merged["merged"]["active"] is False and merged["into"]["id"] == a2
    _refused(db, lambda: hanoi.post(f"/api/v1/organizations/{a1}/merge",
                                    {"into_id": a2, "reason": "x"}), 400,
             "inactive_organization")
    st, versions = hanoi.get(f"/api/v1/organizations/{a1}/versions")
    assert versions[-1]["merged_into_id"] == a2 and versions[-1]["active"] is False
    from tests.transfers.conftest import events
    assert len(events(db, "organization.move")) == 1
    assert len(events(db, "organization.merge")) == 1


def test_only_a_person_goes_to_another_domain(who, db, clock):
    """An organisation seal follows its agency (reorganisations), not a staff transfer."""
    from ca.registry import add_subscriber
    with db.transaction() as s:
        seal = add_subscriber(s, organization_id=_hanoi_unit(s), full_name="Sở Nội vụ",
                              id_number="001099012345", email="snv@hanoi.gov.vn",
                              at=clock.now(), actor="test", kind="organization").id
    _refused(db, lambda: who["ra.hanoi"].post(f"/api/v1/subscribers/{seal}/transfer", {
        "organization_id": units(db, "quangninh")[0]}), 400, "not_a_person")


def _hanoi_unit(s):
    from sqlalchemy import select
    from ca.store.models import Organization
    from ca.store.models import RaDomain as D
    return s.execute(select(Organization.id).join(D).where(
        D.code == "hanoi", Organization.kind == "unit").order_by(Organization.id)).scalars().first()
