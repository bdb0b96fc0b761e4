"""The whole story in a real browser (headless Chromium via Playwright) against a real
gunicorn process: officer registers and requests, a second person approves, the staff member
downloads, renews and reports a lost token. Screenshots go to test-artifacts/."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509

from tests import factories
from tests.browserkit import ARGS, CHROMIUM, login as _login, serve, shot as _shot  # noqa: F401

USERS = ("ra.hanoi", "approver.hanoi")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(db, tmp_path, hsm_config, clock):
    """gunicorn serving the test database, with the demo logins in demo-credentials.txt."""
    with serve(db, tmp_path, hsm_config, clock, USERS) as (base, creds, _instance):
        yield base, creds


def _approve(page, base, rid):
    page.goto(base + "/ra/requests")
    page.click(f"tr[data-request='{rid}'] button[name=approve]")
    page.wait_for_load_state()
    state = page.get_attribute("#state", "data-state")
    assert state in ("issued", "done"), page.content()[:3000]


def test_browser_story(server, tmp_path, db):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]'")
    base, creds = server
    csr_path = tmp_path / "staff.csr"
    csr_path.write_bytes(factories.csr(factories.key("p256")))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            shot = browser.new_page()
            shot.goto(base + "/login")
            _shot(shot, "01-login")
            officer = _login(browser, base, "ra.hanoi", *creds["ra.hanoi"])
            _shot(officer, "02-dashboard")

            # Register a staff member with a login.
            officer.goto(base + "/ra/subscribers/new")
            officer.fill("#full_name", "Trịnh Thị Thu Hà")
            officer.fill("#date_of_birth", "1990-03-15")
            officer.fill("#id_number", "001190001234")
            officer.fill("#email", "tt.ha@hanoi.gov.vn")
            officer.fill("#mobile", "0987654321")
            officer.fill("#position", "Văn thư")
            officer.select_option("#organization_id", index=3)
            officer.check("input[name=create_login]")
            officer.fill("#username", "tt.ha")
            _shot(officer, "03-register")
            officer.click("button.primary")
            officer.wait_for_load_state()
            password = officer.text_content("#new-password").strip()
            officer.click("text=Xem thuê bao")
            officer.wait_for_load_state()
            assert "Trịnh Thị Thu Hà" in officer.content()

            # An issue request with the CSR file.
            officer.click("#new-request")
            officer.select_option("#type", "issue")
            officer.select_option("#profile", "personal")
            officer.set_input_files("#csr_file", str(csr_path))
            _shot(officer, "04-request")
            officer.click("button.primary")
            officer.wait_for_load_state()
            rid = re.search(r"/ra/requests/(\d+)", officer.url).group(1)
            assert officer.get_attribute("#state", "data-state") == "submitted"
            assert officer.locator("button[name=approve]").count() == 0

            # A second person approves.
            approver = _login(browser, base, "approver.hanoi", *creds["approver.hanoi"])
            approver.goto(base + "/ra/requests")
            _shot(approver, "05-queue")
            _approve(approver, base, rid)
            serial = approver.text_content("#issued-serial").strip()
            _shot(approver, "06-approved")

            # The staff member logs in and downloads the certificate.
            staff = _login(browser, base, "tt.ha", password)
            staff.goto(base + "/me/")
            _shot(staff, "07-my-certificates")
            with staff.expect_download() as info:
                staff.click(f"tr[data-serial='{serial}'] a[data-format=pem]")
            cert = x509.load_pem_x509_certificate(Path(info.value.path()).read_bytes())
            assert format(cert.serial_number, "x") == serial
            assert "Trịnh Thị Thu Hà" in cert.subject.rfc4514_string()

            # Renewal (same key), approved by the approver.
            staff.click(f"tr[data-serial='{serial}'] a.renew")
            staff.click("button.primary")
            staff.wait_for_load_state()
            rid = staff.locator("table.requests tr[data-request]").first.get_attribute(
                "data-request")
            _approve(approver, base, rid)
            new_serial = approver.text_content("#issued-serial").strip()
            assert new_serial != serial

            # Lost token: a keyCompromise revocation, approved by the RA.
            staff.goto(base + "/me/")
            staff.on("dialog", lambda d: d.accept())
            staff.click(f"tr[data-serial='{new_serial}'] button.lost")
            staff.wait_for_load_state()
            rid = staff.locator("table.requests tr[data-request]").first.get_attribute(
                "data-request")
            _approve(approver, base, rid)
            staff.goto(base + "/me/")
            row = staff.text_content(f"tr[data-serial='{new_serial}']")
            assert "đã thu hồi" in row
            _shot(staff, "08-revoked")
            staff.goto(base + "/lang/en?next=/me/")
            assert "My certificates" in staff.content() or "revoked" in staff.content()
            _shot(staff, "09-english")
        finally:
            browser.close()
