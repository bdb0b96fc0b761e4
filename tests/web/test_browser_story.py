"""The whole story in a real browser (headless Chromium via Playwright) against a real
gunicorn process: officer registers and requests, a second person approves, the staff member
downloads, renews and reports a lost token. Screenshots go to test-artifacts/."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyotp
import pytest
from cryptography import x509
from sqlalchemy import select

from ca.ra.users import generate_password, set_password
from ca.store.models_ra import RaUser
from ra_portal.demo import write_credentials
from tests import factories
from tests.conftest import TOKEN_LABEL, database_url

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
USERS = ("ra.hanoi", "approver.hanoi")
pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _credentials(path: Path) -> dict[str, tuple[str, str | None]]:
    out = {}
    for line in path.read_text("utf-8").splitlines():
        if line and not line.startswith("#"):
            user, _role, password, secret = line.split("\t")
            out[user] = (password, None if secret == "-" else secret)
    return out


@pytest.fixture
def server(db, tmp_path, hsm_config, clock):
    """gunicorn serving the test database, with the demo logins in demo-credentials.txt."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: the browser test needs it "
                    f"(run scripts/bootstrap.sh --test as root, or apt-get install chromium)")
    instance = tmp_path / "instance"
    instance.mkdir()
    rows = []
    with db.transaction() as s:  # fresh passwords, as `govca demo init` would hand them out
        for name in USERS:
            user = s.execute(select(RaUser).where(RaUser.username == name)).scalar_one()
            password = generate_password()
            set_password(s, user, password, actor="test", at=clock.now())
            rows.append((name, user.role, password, user.totp_secret))
    write_credentials(instance / "demo-credentials.txt", rows)
    port = _free_port()
    env = {**os.environ, "GOVCA_INSTANCE": str(instance),
           "GOVCA_DATABASE_URL": database_url(tmp_path),
           "GOVCA_PKCS11_MODULE": hsm_config.module, "GOVCA_PKCS11_TOKEN": TOKEN_LABEL,
           "GOVCA_PKCS11_PIN_FILE": str(hsm_config.pin_file),
           "SOFTHSM2_CONF": str(hsm_config.softhsm_conf),
           "GOVCA_BASE_URL": f"http://127.0.0.1:{port}", "GOVCA_SCHEDULER": "off"}
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                             "--workers", "1", "--threads", "4", "--timeout", "60", "wsgi:app"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        else:
            pytest.fail("the server did not start")
        if proc.poll() is not None:
            pytest.fail("the server exited: " + (tmp_path / "server.log").read_text()[-2000:])
        yield base, _credentials(instance / "demo-credentials.txt")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _login(browser, base, username, password, secret=None):
    ctx = browser.new_context(accept_downloads=True, locale="vi-VN")
    page = ctx.new_page()
    page.set_default_timeout(15000)
    page.goto(base + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    if secret:
        page.fill("input[name=otp]", pyotp.TOTP(secret).now())
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()[:2000]
    return page


def _shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


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
