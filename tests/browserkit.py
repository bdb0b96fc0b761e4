"""Shared pieces of the browser tests: a real gunicorn serving the test database, demo logins
with fresh passwords, headless Chromium via Playwright, login and screenshots."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import select

from ca.ra.users import generate_password, set_password
from ca.store.models_ra import RaUser
from ra_portal.demo import write_credentials
from tests.conftest import TOKEN_LABEL, database_url

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def credentials(path: Path) -> dict[str, tuple[str, str | None]]:
    out = {}
    for line in path.read_text("utf-8").splitlines():
        if line and not line.startswith("#"):
            user, _role, password, secret = line.split("\t")
            out[user] = (password, None if secret == "-" else secret)
    return out


def require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: the browser test needs it "
                    f"(run scripts/bootstrap.sh --test as root, or apt-get install chromium)")


def server_env(tmp_path: Path, instance: Path, hsm_config, port: int) -> dict[str, str]:
    return {**os.environ, "GOVCA_INSTANCE": str(instance),
            "GOVCA_DATABASE_URL": database_url(tmp_path),
            "GOVCA_PKCS11_MODULE": hsm_config.module, "GOVCA_PKCS11_TOKEN": TOKEN_LABEL,
            "GOVCA_PKCS11_PIN_FILE": str(hsm_config.pin_file),
            "SOFTHSM2_CONF": str(hsm_config.softhsm_conf),
            "GOVCA_BASE_URL": f"http://127.0.0.1:{port}", "GOVCA_SCHEDULER": "off"}


@contextlib.contextmanager
def serve(db, tmp_path: Path, hsm_config, clock, users) -> Iterator[tuple[str, dict, Path]]:
    """gunicorn on the test database; `users` get fresh passwords, written to the instance's
    demo-credentials.txt as `govca demo init` would. Yields (base URL, logins, instance)."""
    require_chromium()
    instance = tmp_path / "instance"
    instance.mkdir(exist_ok=True)
    rows = []
    with db.transaction() as s:
        for name in users:
            user = s.execute(select(RaUser).where(RaUser.username == name)).scalar_one()
            password = generate_password()
            set_password(s, user, password, actor="test", at=clock.now())
            rows.append((name, user.role, password, user.totp_secret))
    write_credentials(instance / "demo-credentials.txt", rows)
    port = free_port()
    env = server_env(tmp_path, instance, hsm_config, port)
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
        yield base, credentials(instance / "demo-credentials.txt"), instance
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def login(browser, base: str, username: str, password: str, secret: str | None = None):
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


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@contextlib.contextmanager
def chromium():
    """A headless Chromium browser (Playwright), closed afterwards."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
