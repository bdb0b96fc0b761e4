"""The report pages in a real browser (headless Chromium, gunicorn) on realistic generated data
(three provinces, thousands of certificates): the numbers shown equal direct SQL counts, for
the centre and for a province. Screenshots go to test-artifacts/."""
from __future__ import annotations

import datetime as dt

import pytest

from tests.audit import reportdata
from tests.audit.test_reports import STATUS_SQL, _sql
from tests.browserkit import ARGS, CHROMIUM, login as _login, serve, shot as _shot

USERS = ("auditor", "ra.quangninh")
pytestmark = pytest.mark.timeout(90)
ROWS_JS = "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent.trim()))"


@pytest.fixture
def report_server(db, tmp_path, hsm_config, clock):
    data = reportdata.generate(db, dt.datetime.now(dt.timezone.utc))
    with serve(db, tmp_path, hsm_config, clock, USERS) as (base, creds, _instance):
        yield base, creds, data


def _status(db, extra=""):
    now = dt.datetime.now(dt.timezone.utc)
    return {g: [str(a), str(e), str(r), str(a + e + r)]
            for g, r, e, a in _sql(db, STATUS_SQL.format(extra=extra), now=now)}


def test_report_pages_in_a_browser_match_sql(report_server, db):
    from playwright.sync_api import sync_playwright
    base, creds, data = report_server
    assert data["certificates"] > 1000
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            auditor = _login(browser, base, "auditor", *creds["auditor"])
            auditor.goto(base + "/reports/")
            _shot(auditor, "reports-01-centre")
            shown = auditor.eval_on_selector_all("section#by_domain tbody tr", ROWS_JS)
            assert {r[0]: r[1:] for r in shown} == _status(db)
            assert auditor.locator("section#by_domain svg rect").count() >= 9
            assert auditor.locator("svg").count() >= 6
            months = auditor.eval_on_selector_all("section#per_month tbody tr", ROWS_JS)
            [(n,)] = _sql(db, "SELECT COUNT(*) FROM certificate WHERE state = 'issued' AND "
                              "subscriber_id IS NOT NULL AND issued_at >= :now",
                          now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400))
            assert 0 < sum(int(m[1]) for m in months) <= n
            requests = auditor.eval_on_selector_all("section#requests tbody tr", ROWS_JS)
            [(nreq,)] = _sql(db, "SELECT COUNT(*) FROM ra_request")
            assert sum(int(r[2]) for r in requests) == nreq

            qn = data["domains"]["quangninh"]
            officer = _login(browser, base, "ra.quangninh", *creds["ra.quangninh"])
            officer.goto(base + "/reports/")
            _shot(officer, "reports-02-quangninh")
            shown = officer.eval_on_selector_all("section#by_domain tbody tr", ROWS_JS)
            assert {r[0]: r[1:] for r in shown} == _status(db, f"AND s.domain_id = {qn}")
            devices = officer.eval_on_selector_all("section#by_device tbody tr", ROWS_JS)
            want = {d: n for d, n in _sql(
                db, "SELECT s.device_type, COUNT(*) FROM certificate c JOIN subscriber s ON "
                    f"s.id = c.subscriber_id WHERE c.state = 'issued' AND s.domain_id = {qn} "
                    "GROUP BY s.device_type")}
            assert {r[0]: int(r[4]) for r in devices} == want
            r = officer.goto(base + f"/reports/?domain={data['domains']['hanoi']}")
            assert r.status == 404
        finally:
            browser.close()
