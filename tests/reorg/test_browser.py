"""The dry run and the self-updating progress page in a real browser (headless Chromium,
gunicorn), while `govca reorg run` works in another process. Screenshots in test-artifacts/."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from ca.ra.roles import Caller
from ca.reorg.plans import create_plan
from ca.store.models import Certificate, RaDomain, Subscriber
from tests.browserkit import chromium, login, serve, shot
from tests.integration.test_core_cli import cli_env, run_cli

pytestmark = pytest.mark.timeout(180)


def test_dry_run_and_progress_pages_in_a_browser(db, small_world, tmp_path, hsm_config, clock,
                                                 services):
    with db.transaction() as s:
        plan_id = create_plan(s, Caller.system("cli"), name="Sáp nhập Hà Giang, Bắc Kạn",
                              clock=services.clock, items=[
                                  {"kind": "merge_province", "sources": ["hagiang"],
                                   "target": "tuyenquang"},
                                  {"kind": "merge_province", "sources": ["backan"],
                                   "target": "thainguyen"}]).id
        doms = s.execute(select(RaDomain.id).where(
            RaDomain.code.in_(["hagiang", "backan"]))).scalars().all()
        want = s.execute(select(func.count()).select_from(Certificate).join(
            Subscriber, Subscriber.id == Certificate.subscriber_id).where(
            Subscriber.domain_id.in_(doms), Certificate.revoked_at.is_(None))).scalar_one()
    with serve(db, tmp_path, hsm_config, clock, ["operator"]) as (base, creds, _), \
            chromium() as browser:
        page = login(browser, base, "operator", *creds["operator"])
        page.goto(base + "/reorg/")
        page.click(f"#plan-{plan_id} a >> nth=1")
        page.wait_for_load_state()
        assert "Chưa chạy thử." in page.content()
        page.click("#dry-run-button")
        page.wait_for_load_state()
        assert int(page.text_content("#f-certificates")) == want
        assert int(page.text_content("#f-seal-revoke")) == 2
        assert page.locator("#dry-run-chart svg rect").count() >= 2
        shot(page, "reorg-01-dry-run")
        page.click("#approve-button")
        page.wait_for_load_state()
        assert "đã phê duyệt" in page.text_content("#plan-state")
        page.click("#start-button")
        page.wait_for_load_state()
        assert re.search(rf"/reorg/{plan_id}/progress$", page.url)
        assert page.text_content("#p-done").strip() == "0"
        shot(page, "reorg-02-progress-before")
        # the worker runs in its own process; the page follows it without a reload
        result = run_cli(cli_env(tmp_path, hsm_config), "reorg", "run", str(plan_id),
                         "--hsm-rate", "500", timeout=120)
        assert result.returncode == 0, result.stderr.decode()
        page.wait_for_function("document.getElementById('p-state').textContent.trim() "
                               "=== 'hoàn thành'", timeout=20000)
        assert page.text_content("#p-done").strip() == str(want)
        assert page.text_content("#p-total").strip() == str(want)
        assert int(page.get_attribute("#progress", "data-polls") or 0) >= 1
        shot(page, "reorg-03-progress-done")
        page.reload()  # without JavaScript the page shows the same on reload
        assert page.text_content("#p-done").strip() == str(want)
