"""Reorganisation pages with the test client: list, detail with dry run and chart, approval
with CSRF and the two-person rule, controls, progress page + JSON, failures, scope 404."""
from __future__ import annotations

import re

from ca.reorg.plans import create_plan
from ca.store.models_reorg import ReorgPlan
from tests.web.conftest import login_as  # noqa: F401  (fixtures)
from tests.ra.conftest import caller_of  # noqa: F401

MERGE = [{"kind": "merge_province", "sources": ["hagiang"], "target": "tuyenquang"}]


def _plan(db, services, who, items=MERGE):
    with db.transaction() as s:
        return create_plan(s, who, name="Sáp nhập Hà Giang", items=items,
                           clock=services.clock).id


def test_dry_run_approval_and_progress_pages(login_as, db, services, small_world, caller_of):  # noqa: F811
    from ca.ra.roles import Caller
    pid = _plan(db, services, Caller.system("cli"))
    op = login_as("operator")
    page = op.get("/reorg/").get_data(as_text=True)
    assert "Sáp nhập Hà Giang" in page and "bản nháp" in page
    detail = op.get(f"/reorg/{pid}").get_data(as_text=True)
    assert "Chưa chạy thử." in detail and 'id="approve-button"' in detail
    # a POST without the CSRF token changes nothing
    r = op.post(f"/reorg/{pid}/dry-run", csrf=False)
    assert r.status_code in (302, 400)
    with db.transaction() as s:
        assert s.get(ReorgPlan, pid).dry_run is None
    r = op.post(f"/reorg/{pid}/dry-run", token_from=f"/reorg/{pid}")
    assert r.status_code == 302
    detail = op.get(f"/reorg/{pid}").get_data(as_text=True)
    with db.transaction() as s:
        figures = s.get(ReorgPlan, pid).dry_run
    m = re.search(r'id="f-certificates">(\d+)<', detail)
    assert m and int(m.group(1)) == figures["certificates"] > 0
    assert "<svg" in detail and "Tỉnh Tuyên Quang" in detail
    # approve with the hash shown
    r = op.post(f"/reorg/{pid}/approve", {"content_hash": figures["content_hash"]},
                token_from=f"/reorg/{pid}")
    assert r.status_code == 302
    with db.transaction() as s:
        assert s.get(ReorgPlan, pid).state == "approved"
    r = op.post(f"/reorg/{pid}/start", token_from=f"/reorg/{pid}")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/reorg/{pid}/progress")
    prog = op.get(f"/reorg/{pid}/progress").get_data(as_text=True)
    assert 'id="p-total"' in prog and "đang chạy" in prog
    js = op.get(f"/reorg/{pid}/progress.json").get_json()
    assert js["state"] == "running" and js["state_label"] == "đang chạy"
    assert op.get(f"/reorg/{pid}/failures").status_code == 200


def test_preparer_cannot_approve_and_other_province_gets_404(login_as, db, services,
                                                             small_world, caller_of):  # noqa: F811
    pid = _plan(db, services, caller_of("operator"))
    op = login_as("operator")
    detail = op.get(f"/reorg/{pid}").get_data(as_text=True)
    assert 'id="approve-button"' not in detail
    r = op.post(f"/reorg/{pid}/approve", token_from=f"/reorg/{pid}", follow_redirects=True)
    assert "chữ ký nháy" in r.get_data(as_text=True)
    with db.transaction() as s:
        assert s.get(ReorgPlan, pid).state == "draft"
    qn = login_as("ra.quangninh")
    for url in (f"/reorg/{pid}", f"/reorg/{pid}/progress", f"/reorg/{pid}/failures",
                f"/reorg/{pid}/progress.json", "/reorg/999999"):
        assert qn.get(url).status_code == 404, url
    assert "Sáp nhập Hà Giang" not in qn.get("/reorg/").get_data(as_text=True)
