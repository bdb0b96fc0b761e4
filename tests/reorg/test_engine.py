"""Plans run in one process: structure, certificates changed and revoked, seals, idempotence."""
from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from ca import audit
from ca.reorg.plans import approve_plan, create_plan
from ca.store.models import AuditEvent, Certificate, Organization, RaDomain, Subscriber
from ca.store.models_org import OrganizationVersion
from ca.store.models_ra import RaUser
from ca.store.models_reorg import ReorgWork

MERGE = [{"kind": "merge_province", "sources": ["hagiang"], "target": "tuyenquang"},
         {"kind": "merge_province", "sources": ["backan"], "target": "thainguyen"}]


def approved_plan(db, preparer, operator, clock, items=MERGE):
    with db.transaction() as s:
        plan = create_plan(s, preparer, name="Sáp nhập thử", items=items, clock=clock)
    with db.transaction() as s:
        approve_plan(s, operator, plan.id, clock=clock)
    return plan.id


def valid_certs(s, sub_id, now):
    return s.execute(select(Certificate).where(
        Certificate.subscriber_id == sub_id, Certificate.state == "issued",
        Certificate.revoked_at.is_(None), Certificate.not_after > now)).scalars().all()


def locality(cert):
    c = x509.load_der_x509_certificate(cert.der)
    return c.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value


def test_merge_provinces_changes_people_and_revokes_absorbed_seals(
        db, small_world, preparer, operator, clock, runner_for):
    with db.transaction() as s:
        hg = s.execute(select(RaDomain).where(RaDomain.code == "hagiang")).scalar_one()
        tq = s.execute(select(RaDomain).where(RaDomain.code == "tuyenquang")).scalar_one()
        hg_people = set(s.execute(select(Subscriber.id).where(
            Subscriber.domain_id == hg.id, Subscriber.kind == "person")).scalars())
        hg_seals = s.execute(select(Subscriber).where(
            Subscriber.domain_id == hg.id, Subscriber.kind == "organization")
            .order_by(Subscriber.id)).scalars().all()
        top_seal = [x.id for x in hg_seals if x.organization.parent_id is None]
        dept_seal = [x.id for x in hg_seals if x.organization.parent_id is not None]
        tq_before = {c.serial for c in s.execute(select(Certificate).join(Subscriber).where(
            Subscriber.domain_id == tq.id)).scalars()}
        old_serials = {sid: [c.serial for c in valid_certs(s, sid, clock.now())]
                       for sid in hg_people | {x.id for x in hg_seals}}
    assert hg_people and len(top_seal) == 1 and len(dept_seal) == 1
    plan_id = approved_plan(db, preparer, operator, clock)
    result = runner_for().run(plan_id)
    assert result.state == "done" and result.failed == 0
    now = clock.now()
    with db.transaction() as s:
        hg = s.get(RaDomain, hg.id)
        assert hg.status == "merged" and hg.merged_into_id == tq.id
        for sid in hg_people | set(dept_seal):
            sub = s.get(Subscriber, sid)
            assert sub.domain_id == tq.id
            valid = valid_certs(s, sid, now)
            assert len(valid) == 1 and locality(valid[0]) == "Tuyên Quang"
            old = s.execute(select(Certificate).where(
                Certificate.serial == old_serials[sid][0])).scalar_one()
            assert old.revocation_reason == "affiliationChanged"
            assert valid[0].not_after == old.not_after  # same expiry
            assert valid[0].spki_sha256 == old.spki_sha256  # same key, on the holder's token
            # the old certificate keeps the old organisation version
            assert old.organization_version_id != valid[0].organization_version_id
        # the absorbed People's Committee: its seal is revoked, nothing new issued
        assert valid_certs(s, top_seal[0], now) == []
        old = s.execute(select(Certificate).where(
            Certificate.serial == old_serials[top_seal[0]][0])).scalar_one()
        assert old.revocation_reason == "cessationOfOperation"
        top = s.get(Subscriber, top_seal[0]).organization
        assert top.active is False
        last = s.execute(select(OrganizationVersion).where(
            OrganizationVersion.organization_id == top.id)
            .order_by(OrganizationVersion.version.desc())).scalars().first()
        assert last.merged_into_id is not None and last.valid_to is not None
        # Tuyên Quang's own staff were not touched
        tq_after = {c.serial for c in s.execute(select(Certificate).join(Subscriber).where(
            Subscriber.domain_id == tq.id, Subscriber.id.not_in(
                hg_people | {x.id for x in hg_seals}))).scalars()}
        assert tq_after == tq_before
        # one revocation event per revoked certificate
        revoked = s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.revoked_at.is_not(None))).scalar_one()
        events = s.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "cert.revoke")).scalar_one()
        assert revoked == events == result.total
        assert not audit.verify_chain(s)


def test_running_again_changes_nothing(db, small_world, preparer, operator, clock, runner_for):
    plan_id = approved_plan(db, preparer, operator, clock)
    runner_for().run(plan_id)
    with db.transaction() as s:
        n_certs = s.execute(select(func.count()).select_from(Certificate)).scalar_one()
    with pytest.raises(Exception) as err:
        runner_for().run(plan_id)
    assert "done" in str(err.value)
    with db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Certificate)).scalar_one() == n_certs


def test_officers_of_the_absorbed_province_see_the_whole_new_one_and_ocsp_answers(
        db, small_world, preparer, operator, clock, runner_for, services):
    from cryptography.x509 import ocsp
    from ca.ra.scope import Scope
    from ca.ra.users import create_user
    from ca.ra.roles import Caller
    with db.transaction() as s:
        create_user(s, Caller.system("test"), username="ra.hagiang", role="ra_officer",
                    at=clock.now(), domain_code="hagiang")
        tq = s.execute(select(RaDomain).where(RaDomain.code == "tuyenquang")).scalar_one()
        tq_people = s.execute(select(func.count()).select_from(Subscriber).where(
            Subscriber.domain_id == tq.id)).scalar_one()
        hg = s.execute(select(RaDomain).where(RaDomain.code == "hagiang")).scalar_one()
        hg_people = s.execute(select(func.count()).select_from(Subscriber).where(
            Subscriber.domain_id == hg.id)).scalar_one()
        old = s.execute(select(Certificate).join(Subscriber).where(
            Subscriber.domain_id == hg.id, Subscriber.kind == "person")).scalars().first()
        old_der, issuer_der = old.der, old.ca.certificate_der
    plan_id = approved_plan(db, preparer, operator, clock, items=MERGE[:1])
    runner_for().run(plan_id)
    with db.transaction() as s:
        user = s.execute(select(RaUser).where(RaUser.username == "ra.hagiang")).scalar_one()
        assert user.domain_id == tq.id
        seen = s.execute(select(func.count()).select_from(Subscriber).where(
            Scope(s, Caller.of(user)).subscribers())).scalar_one()
        assert seen == tq_people + hg_people
    # OCSP: the old certificate is revoked, affiliationChanged
    issuer = x509.load_der_x509_certificate(issuer_der)
    from tests.crl.helpers import ocsp_request, ocsp_service, responders
    responders(services).ensure("issuing")
    answer = ocsp_service(services).answer(ocsp_request(old_der, issuer))
    resp = ocsp.load_der_ocsp_response(answer.der)
    assert resp.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_reason == x509.ReasonFlags.affiliation_changed


def _subject(cert, oid):
    return [a.value for a in x509.load_der_x509_certificate(cert.der).subject
            .get_attributes_for_oid(oid)]


def test_unit_merges_absorption_and_rename(db, small_world, preparer, operator, clock,
                                           runner_for):
    def org(s, code, name):
        dom = s.execute(select(RaDomain).where(RaDomain.code == code)).scalar_one()
        return s.execute(select(Organization).where(Organization.domain_id == dom.id,
                                                    Organization.name == name)).scalar_one()
    with db.transaction() as s:
        hg_yte, hg_noivu = org(s, "hagiang", "Sở Y tế"), org(s, "hagiang", "Sở Nội vụ")
        tn_yte, tn_noivu = org(s, "thainguyen", "Sở Y tế"), org(s, "thainguyen", "Sở Nội vụ")
        tq_noivu = org(s, "tuyenquang", "Sở Tài chính")
        ids = {k: v.id for k, v in dict(hg_yte=hg_yte, hg_noivu=hg_noivu, tn_yte=tn_yte,
                                        tn_noivu=tn_noivu, tq_noivu=tq_noivu).items()}
        seal = {k: s.execute(select(Subscriber.id).where(
            Subscriber.kind == "organization", Subscriber.organization_id == ids[k])
        ).scalar_one() for k in ("hg_yte", "tn_noivu")}
    items = [{"kind": "merge_units_new", "sources": [ids["hg_yte"], ids["hg_noivu"]],
              "new_name": "Sở Y tế và Nội vụ"},
             {"kind": "absorb_unit", "sources": [ids["tn_noivu"]], "target": ids["tn_yte"]},
             {"kind": "rename", "sources": [ids["tq_noivu"]], "new_name": "Sở Tài chính mới"}]
    plan_id = approved_plan(db, preparer, operator, clock, items=items)
    result = runner_for().run(plan_id)
    assert result.state == "done" and result.failed == 0
    now = clock.now()
    with db.transaction() as s:
        work = {w.subscriber_id: w for w in s.execute(select(ReorgWork).where(
            ReorgWork.plan_id == plan_id)).scalars()}
        # the merge into a new body: Sở Y tế's seal becomes the new body's seal
        new_seal = valid_certs(s, seal["hg_yte"], now)
        assert len(new_seal) == 1
        assert _subject(new_seal[0], NameOID.COMMON_NAME) == ["Sở Y tế và Nội vụ"]
        # the absorbed body's seal is revoked, nothing issued
        assert valid_certs(s, seal["tn_noivu"], now) == []
        assert work[seal["tn_noivu"]].reason == "cessationOfOperation"
        # people: O is their new agency; the renamed one too
        by_o = {}
        for sid, w in work.items():
            if w.action != "change" or sid in seal.values():
                continue
            [cert] = valid_certs(s, sid, now)
            by_o.setdefault(_subject(cert, NameOID.ORGANIZATION_NAME)[0], 0)
            by_o[_subject(cert, NameOID.ORGANIZATION_NAME)[0]] += 1
        assert set(by_o) == {"Sở Y tế và Nội vụ", "Sở Y tế", "Sở Tài chính mới"}
        assert s.get(Organization, ids["tn_noivu"]).active is False
        assert s.get(Organization, ids["tq_noivu"]).name == "Sở Tài chính mới"
