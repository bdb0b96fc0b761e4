"""Versioned organisations: rename/move/merge make new versions; certificates keep the version
current at issuance (DER subject and API); history; scope (404); bad input."""
from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from ca.errors import InvalidInput, NotFound, PermissionDenied
from ca.issuance.service import IssueRequest
from ca.ra import organizations as orgs
from ca.store.models import AuditEvent, Certificate, Organization, Subscriber
from ca.store.models_org import OrganizationVersion
from tests import factories
from tests.ra.conftest import staff_id, units

NEW_NAME = "Phòng Chuyển đổi số và Cơ yếu"  # NFC, Vietnamese


def _issue(issuance, sub_id):
    return issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                       csr=factories.csr(factories.key("p256")),
                                       subscriber_id=sub_id))


def _ou(cert_row) -> list[str]:
    der = cert_row.der if hasattr(cert_row, "der") else None
    c = x509.load_der_x509_certificate(der)
    return [a.value for a in c.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]


def _staff_org(db, username):
    with db.transaction() as s:
        sub = s.get(Subscriber, staff_id(db, username))
        org = s.get(Organization, sub.organization_id)
        return sub.id, org.id, org.name


def test_every_demo_organisation_has_version_1(db):
    with db.transaction() as s:
        n_orgs = len(s.execute(select(Organization.id)).all())
        v1 = s.execute(select(OrganizationVersion).where(OrganizationVersion.version == 1)) \
            .scalars().all()
        assert n_orgs > 50 and len(v1) == n_orgs
        assert all(v.valid_to is None for v in v1)


def test_rename_keeps_old_certificates_on_the_old_version(db, api_as, issuance, services):
    sub_id, org_id, old_name = _staff_org(db, "staff.hanoi.1")
    before = _issue(issuance, sub_id)
    api = api_as("ra.hanoi")
    st, v = api.post(f"/api/v1/organizations/{org_id}/rename",
                     {"name": NEW_NAME, "reason": "Quyết định sáp nhập 2025"})
    assert st == 200, v
    assert v["version"] == 2 and v["name"] == NEW_NAME
    after = _issue(issuance, sub_id)
    with db.transaction() as s:
        old_row = s.execute(select(Certificate).where(Certificate.serial == before.serial)) \
            .scalar_one()
        new_row = s.execute(select(Certificate).where(Certificate.serial == after.serial)) \
            .scalar_one()
        assert old_name in _ou(old_row) and NEW_NAME not in _ou(old_row)
        assert NEW_NAME.encode() in new_row.der  # byte-exact NFC UTF-8 in the DER
        assert NEW_NAME in _ou(new_row)
        assert old_row.organization_version_id != new_row.organization_version_id
    st, c1 = api.get(f"/api/v1/certificates/{before.serial}")
    assert st == 200 and c1["organization"] == {"id": org_id, "version": 1, "name": old_name}
    st, c2 = api.get(f"/api/v1/certificates/{after.serial}")
    assert c2["organization"] == {"id": org_id, "version": 2, "name": NEW_NAME}
    st, o = api.get(f"/api/v1/organizations/{org_id}")
    assert st == 200 and o["version"] == 2 and o["name"] == NEW_NAME
    st, hist = api.get(f"/api/v1/organizations/{org_id}/versions")
    assert st == 200 and [h["version"] for h in hist] == [1, 2]
    assert hist[0]["name"] == old_name and hist[0]["valid_to"] is not None
    assert hist[1]["valid_to"] is None and hist[1]["created_by"] == "user:ra.hanoi"
    with db.transaction() as s:
        ev = s.execute(select(AuditEvent).where(AuditEvent.action == "organization.rename")) \
            .scalars().all()
        assert len(ev) == 1 and ev[0].target == f"organization:{org_id}"


def test_quang_ninh_officer_cannot_rename_hanoi(db, api_as):
    org_id = units(db, "hanoi")[0]
    for who in ("ra.quangninh", "approver.quangninh", "staff.quangninh.1"):
        st, body = api_as(who).post(f"/api/v1/organizations/{org_id}/rename",
                                    {"name": "Tên mới", "reason": "thử"})
        assert st == 404 and body["error"]["code"] == "not_found", (who, body)
    st, body = api_as("ra.quangninh").get(f"/api/v1/organizations/{org_id}/versions")
    assert st == 404
    with db.transaction() as s:
        assert s.get(Organization, org_id).name != "Tên mới"
        assert orgs.version_number(s, org_id) == 1


def test_approver_and_auditor_may_not_rename_but_operator_may(db, api_as):
    org_id = units(db, "hanoi")[0]
    for who in ("approver.hanoi", "auditor"):
        st, body = api_as(who).post(f"/api/v1/organizations/{org_id}/rename",
                                    {"name": "Tên mới", "reason": "thử"})
        assert st == 403, (who, body)
    st, body = api_as("operator").post(f"/api/v1/organizations/{org_id}/rename",
                                       {"name": "Tên mới", "reason": "thử"})
    assert st == 200 and body["created_by"] == "user:operator"


@pytest.mark.parametrize("body,field", [
    ({"name": "Phòng\u0007A", "reason": "x"}, "name"),
    ({"name": "Phòng\u202eA", "reason": "x"}, "name"),
    ({"name": "P" * 201, "reason": "x"}, "name"),
    ({"name": "   ", "reason": "x"}, "name"),
    ({"name": 12, "reason": "x"}, "name"),
    ({"name": "Phòng mới"}, "reason"),
    ({"name": "Phòng mới", "reason": "x", "extra": 1}, "extra"),
])
def test_rename_bad_input_is_400_and_changes_nothing(db, api_as, body, field):
    org_id = units(db, "hanoi")[0]
    st, resp = api_as("ra.hanoi").post(f"/api/v1/organizations/{org_id}/rename", body)
    assert st == 400 and resp["error"]["field"] == field, resp
    with db.transaction() as s:
        assert orgs.version_number(s, org_id) == 1


def test_rename_unknown_id_and_not_json(api_as, db):
    api = api_as("ra.hanoi")
    st, body = api.post("/api/v1/organizations/999999/rename", {"name": "A", "reason": "b"})
    assert st == 404
    org_id = units(db, "hanoi")[0]
    st, body = api.post(f"/api/v1/organizations/{org_id}/rename", data="x",
                        content_type="text/plain")
    assert st == 400


def test_move_and_cycle(db, services, caller_of):
    officer, qn = caller_of("ra.hanoi"), caller_of("ra.quangninh")
    unit_id = units(db, "hanoi")[0]
    with db.transaction() as s:
        unit = s.get(Organization, unit_id)
        agency = s.get(Organization, unit.parent_id)
        top = s.get(Organization, agency.parent_id)
        with pytest.raises(InvalidInput) as e:
            orgs.move(s, officer, top.id, unit.id, "vòng", clock=services.clock)
        assert e.value.code == "cycle"
        with pytest.raises(InvalidInput):
            orgs.move(s, officer, agency.id, agency.id, "vòng", clock=services.clock)
        other = s.execute(select(Organization).where(
            Organization.parent_id == top.id, Organization.id != agency.id,
            Organization.kind == "agency")).scalars().first()
        v = orgs.move(s, officer, unit.id, other.id, "chuyển phòng", clock=services.clock)
        assert v.version == 2 and v.parent_id == other.id and unit.level == other.level + 1
        with pytest.raises(NotFound):
            orgs.move(s, qn, unit.id, None, "x", clock=services.clock)


def test_merge_into_existing_and_into_new(db, services, caller_of):
    officer = caller_of("ra.hanoi")
    hanoi, qn_unit = units(db, "hanoi"), units(db, "quangninh")[0]
    with db.transaction() as s:
        a, b, c = hanoi[:3]
        target = orgs.merge(s, officer, [a, b], into_id=c, reason="hợp nhất",
                            clock=services.clock)
        assert target.id == c
        for src in (a, b):
            assert s.get(Organization, src).active is False
            hist = orgs.history(s, officer, src)
            assert [h.version for h in hist] == [1, 2]
            assert hist[-1].merged_into_id == c and hist[-1].valid_to is not None
            assert hist[-1].active is False
        with pytest.raises(InvalidInput):  # merged organisations cannot be renamed or merged
            orgs.rename(s, officer, a, "Khác", "x", clock=services.clock)
        d, e = hanoi[3:5]
        new = orgs.merge(s, officer, [d, e], new_name="Phòng Hợp nhất", reason="hợp nhất",
                         clock=services.clock)
        assert new.name == "Phòng Hợp nhất" and new.active
        assert orgs.history(s, officer, new.id)[0].created_by == "user:ra.hanoi"
        with pytest.raises(NotFound):
            orgs.merge(s, officer, [qn_unit], into_id=c, reason="x", clock=services.clock)
        with pytest.raises(InvalidInput):
            orgs.merge(s, officer, [c], into_id=c, reason="x", clock=services.clock)
        parent = s.get(Organization, c).parent_id
        with pytest.raises(InvalidInput) as err:
            orgs.merge(s, officer, [parent], into_id=c, reason="x", clock=services.clock)
        assert err.value.code == "cycle"


def test_merge_scope_for_approver(db, services, caller_of):
    a, b = units(db, "hanoi")[:2]
    approver = caller_of("approver.hanoi")
    with db.transaction() as s:
        with pytest.raises(PermissionDenied):
            orgs.merge(s, approver, [a], into_id=b, reason="x",
                       clock=services.clock)


def test_backfill_gives_version_1_to_rows_from_before_versions(db, services):
    from ra_portal.demo import backfill_versions
    org_id = units(db, "hanoi")[0]
    with db.transaction() as s:
        s.query(OrganizationVersion).filter_by(organization_id=org_id).delete()
    with db.transaction() as s:
        assert backfill_versions(s, services.clock.now()) == 1
        assert backfill_versions(s, services.clock.now()) == 0
        assert orgs.version_number(s, org_id) == 1
