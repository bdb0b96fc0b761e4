"""Plan validation, the dry run against SQL, approval rules, scope."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from ca.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from ca.reorg import csvmap
from ca.reorg.dryrun import dry_run
from ca.reorg.plans import approve_plan, create_plan, edit_plan, get_plan, list_plans
from ca.store.models import AuditEvent, Certificate, Organization, RaDomain, Subscriber
from ca.store.models_reorg import ReorgPlan
from tests.reorg.conftest import caller_of

MERGE = [{"kind": "merge_province", "sources": ["hagiang"], "target": "tuyenquang"}]


def _org(s, domain_code, name):
    return s.execute(select(Organization).join(RaDomain).where(
        RaDomain.code == domain_code, Organization.name == name)).scalars().first()


def _plans(db):
    with db.transaction() as s:
        return s.execute(select(func.count()).select_from(ReorgPlan)).scalar_one()


@pytest.mark.parametrize("items, error, code, text", [
    ([{"kind": "merge_province", "sources": ["khongco"], "target": "tuyenquang"}], NotFound,
     "unknown_unit", "unknown province 'khongco'"),
    ([{"kind": "merge_province", "sources": ["hagiang"], "target": "tuyenquang"},
      {"kind": "merge_province", "sources": ["hagiang"], "target": "thainguyen"}], InvalidInput,
     "mapped_twice", "mapped twice"),
    ([{"kind": "merge_province", "sources": ["hagiang"], "target": "tuyenquang"},
      {"kind": "merge_province", "sources": ["tuyenquang"], "target": "hagiang"}], InvalidInput,
     "cycle", "cycle"),
    ([{"kind": "merge_province", "sources": ["hagiang"], "target": "tuyenquang"},
      {"kind": "merge_province", "sources": ["tuyenquang"], "target": "thainguyen"}],
     InvalidInput, "chain", "is a target and is mapped away"),
    ([{"kind": "merge_province", "sources": ["hagiang"], "target": "hagiang"}], InvalidInput,
     "cycle", "onto itself"),
    ([{"kind": "absorb_unit", "sources": [2**31 + 5], "target": 1}], InvalidInput,
     "wrong_type", "positive integer"),
    ([{"kind": "split"}], InvalidInput, None, "kind must be one of"),
    ([], InvalidInput, None, "non-empty list"),
])
def test_bad_plans_are_refused_before_anything_is_stored(db, small_world, preparer, clock,
                                                         items, error, code, text):
    before = _plans(db)
    with pytest.raises(error) as err, db.transaction() as s:
        create_plan(s, preparer, name="xấu", items=items, clock=clock)
    assert text in err.value.message
    if code:
        assert err.value.code == code
    assert _plans(db) == before


def test_unit_cycle_and_unknown_unit(db, small_world, preparer, clock):
    with db.transaction() as s:
        ubnd = _org(s, "hagiang", "Ủy ban nhân dân Tỉnh Hà Giang")
        syt = s.execute(select(Organization).where(Organization.parent_id == ubnd.id)
                        ).scalars().first()
        ubnd_id, syt_id = ubnd.id, syt.id
    with pytest.raises(InvalidInput, match="cycle"), db.transaction() as s:
        create_plan(s, preparer, name="x", clock=clock, items=[
            {"kind": "absorb_unit", "sources": [ubnd_id], "target": syt_id}])
    with pytest.raises(NotFound, match="unknown unit 999999"), db.transaction() as s:
        create_plan(s, preparer, name="x", clock=clock, items=[
            {"kind": "absorb_unit", "sources": [999999], "target": syt_id}])


def test_province_officer_is_confined_to_its_province(db, small_world, clock):
    officer, op = caller_of(db, "ra.hanoi"), caller_of(db, "operator")
    with db.transaction() as s:
        qn_org = _org(s, "quangninh", "Sở Y tế").id
        hn = s.execute(select(RaDomain).where(RaDomain.code == "hanoi")).scalar_one()
        hn_a, hn_b = s.execute(select(Organization.id).where(
            Organization.domain_id == hn.id, Organization.kind == "unit")
            .order_by(Organization.id).limit(2)).scalars().all()
    # a target in another province answers like a missing one
    with pytest.raises(NotFound, match="unknown unit"), db.transaction() as s:
        create_plan(s, officer, name="x", clock=clock, items=[
            {"kind": "absorb_unit", "sources": [hn_a], "target": qn_org}])
    with pytest.raises(PermissionDenied), db.transaction() as s:
        create_plan(s, officer, name="x", clock=clock, items=MERGE)
    with db.transaction() as s:
        mine = create_plan(s, officer, name="Hợp nhất phòng", clock=clock, items=[
            {"kind": "absorb_unit", "sources": [hn_a], "target": hn_b}])
        assert mine.domain_id == hn.id
        central = create_plan(s, op, name="TW", clock=clock, items=MERGE)
        mine_id, central_id = mine.id, central.id
    qn = caller_of(db, "ra.quangninh")
    with db.transaction() as s:
        with pytest.raises(NotFound):
            get_plan(s, qn, mine_id)
        with pytest.raises(NotFound):
            get_plan(s, officer, central_id)
        assert [p.id for p in list_plans(s, officer)] == [mine_id]
        assert {p.id for p in list_plans(s, op)} >= {mine_id, central_id}


def test_dry_run_counts_match_sql(db, small_world, preparer, clock):
    with db.transaction() as s:
        plan = create_plan(s, preparer, name="thử", clock=clock, items=[
            {"kind": "merge_province", "sources": ["hagiang"], "target": "tuyenquang"},
            {"kind": "merge_province", "sources": ["backan"], "target_name": "Tỉnh Mới"}])
    with db.transaction() as s:
        out = dry_run(s, preparer, plan.id, clock=clock, hsm_rate=400.0, share=0.5)
    with db.transaction() as s:
        doms = s.execute(select(RaDomain.id).where(RaDomain.code.in_(["hagiang", "backan"]))
                         ).scalars().all()
        rows = s.execute(select(Subscriber.kind, func.count()).join(
            Certificate, Certificate.subscriber_id == Subscriber.id).where(
            Subscriber.domain_id.in_(doms), Certificate.state == "issued",
            Certificate.revoked_at.is_(None), Certificate.not_after > clock.now())
            .group_by(Subscriber.kind)).all()
        by_kind = dict(rows)
        subs = s.execute(select(func.count()).select_from(Subscriber).where(
            Subscriber.domain_id.in_(doms))).scalar_one()
        assert s.get(ReorgPlan, plan.id).dry_run["certificates"] == out["certificates"]
    assert out["subscribers"] == subs
    assert out["certificates"] == by_kind["person"] + by_kind["organization"]
    assert out["personal_change"] == by_kind["person"]
    # Hà Giang's committee is absorbed by Tuyên Quang's: revoked; Bắc Kạn's becomes the new
    # province's committee (merge into a new body): changed. Department seals change.
    assert out["seal_revoke"] == 1
    assert out["seal_change"] == by_kind["organization"] - 1
    assert out["estimated_seconds"] == pytest.approx(out["changes"] / 200.0, abs=0.1)


def test_approval_needs_a_second_person_and_edits_drop_it(db, small_world, clock):
    op = caller_of(db, "operator")
    with db.transaction() as s:
        plan = create_plan(s, op, name="thử", clock=clock, items=MERGE)
    with pytest.raises(PermissionDenied, match="different person"), db.transaction() as s:
        approve_plan(s, op, plan.id, clock=clock)
    hn_approver = caller_of(db, "approver.hanoi")
    with pytest.raises(NotFound), db.transaction() as s:  # a central plan is not theirs
        approve_plan(s, hn_approver, plan.id, clock=clock)
    from ca.ra.roles import Caller
    second = Caller.system("cli")
    with db.transaction() as s:
        approve_plan(s, second, plan.id, clock=clock)
    with db.transaction() as s:
        p = s.get(ReorgPlan, plan.id)
        assert p.state == "approved" and p.approved_by == "system:cli"
        approved_hash = p.approved_hash
    with db.transaction() as s:
        edit_plan(s, op, plan.id, clock=clock, items=MERGE + [
            {"kind": "merge_province", "sources": ["backan"], "target": "thainguyen"}])
    with db.transaction() as s:
        p = s.get(ReorgPlan, plan.id)
        assert p.state == "draft" and p.approved_by is None and p.version == 2
        assert p.content_hash != approved_hash
        ev = s.execute(select(AuditEvent).where(AuditEvent.action == "reorg.plan.edit")
                       ).scalars().one()
        assert '"approval_dropped":true' in ev.details
    with pytest.raises(Conflict, match="changed since it was shown"), db.transaction() as s:
        approve_plan(s, second, plan.id, clock=clock, expected_hash=approved_hash)


def test_csv_maps_all_63_old_provinces(db, small_world):
    text = csvmap.builtin_csv()
    rows = csvmap.parse_rows(text)
    assert len(rows) == 63 and len({new for _o, new in rows}) == 34
    with db.transaction() as s:
        with pytest.raises(NotFound, match="not an RA domain"):
            csvmap.items_from_csv(s, text)
        items, skipped = csvmap.items_from_csv(s, text, skip_missing=True)
    assert {tuple(i["sources"]) for i in items} == {("hagiang",), ("backan",)}
    assert len(skipped) == 63 - 34 - 2
    bad = "old_unit,new_unit\nTỉnh Hà Giang,Tỉnh Tuyên Quang\nTỉnh Hà Giang,Tỉnh Lào Cai\n"
    with pytest.raises(InvalidInput, match="mapped twice"):
        csvmap.parse_rows(bad)


def test_a_renamed_unit_cannot_also_be_merged_away(db, small_world, preparer, clock):
    with db.transaction() as s:
        a, b = s.execute(select(Organization.id).join(RaDomain).where(
            RaDomain.code == "hagiang", Organization.kind == "unit")
            .order_by(Organization.id).limit(2)).scalars().all()
    for items in ([{"kind": "rename", "sources": [a], "new_name": "Phòng mới"},
                   {"kind": "absorb_unit", "sources": [a], "target": b}],
                  [{"kind": "absorb_unit", "sources": [a], "target": b},
                   {"kind": "rename", "sources": [a], "new_name": "Phòng mới"}]):
        with pytest.raises(InvalidInput, match="mapped twice"), db.transaction() as s:
            create_plan(s, preparer, name="x", clock=clock, items=items)
