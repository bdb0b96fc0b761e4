"""Pages in Vietnamese by default and in English on request; the English catalog covers every
message of the pages, and the shipped .mo matches its .po."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from tests.ra.conftest import units
from tests.web.test_pages_story import FORM

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "ra_portal" / "translations"


def test_every_page_message_has_an_english_translation(tmp_path):
    pot = tmp_path / "messages.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F",
                    str(TRANSLATIONS / "babel.cfg"), "-k", "_l", "--no-location", "-o",
                    str(pot), "."], cwd=ROOT, check=True, capture_output=True)
    with pot.open("rb") as fh:
        wanted = {m.id for m in read_po(fh) if m.id}
    with (TRANSLATIONS / "en/LC_MESSAGES/messages.po").open("rb") as fh:
        po = read_po(fh)
    missing = sorted(i for i in wanted if not (po.get(i) and po.get(i).string))
    assert not missing, f"untranslated (run python -m ra_portal.translations.update): {missing}"
    assert len(wanted) > 150


def test_shipped_mo_matches_po():
    po_path = TRANSLATIONS / "en/LC_MESSAGES/messages.po"
    with po_path.open("rb") as fh:
        po = {m.id: m.string for m in read_po(fh) if m.id}
    with po_path.with_suffix(".mo").open("rb") as fh:
        mo = {m.id: m.string for m in read_mo(fh) if m.id}
    assert mo == po, "recompile: python -m ra_portal.translations.update"


def test_vietnamese_by_default_english_on_request(login_as, db):
    officer = login_as("ra.hanoi")
    html = officer.get("/ra/subscribers").get_data(as_text=True)
    assert '<html lang="vi">' in html and "Tìm theo tên" in html and ">English<" in html
    r = officer.get("/lang/en?next=/ra/subscribers")
    assert r.status_code == 302 and r.headers["Location"] == "/ra/subscribers"
    html = officer.get("/ra/subscribers").get_data(as_text=True)
    assert '<html lang="en">' in html and "Search by name" in html and "Tiếng Việt" in html
    data = dict(FORM, organization_id=str(units(db, "hanoi")[0]), id_number="123")
    r = officer.post("/ra/subscribers/new", data)
    assert r.status_code == 400
    assert "Field “ID number (CCCD/CMND/passport)”: a CCCD number is exactly 12 digits" in \
        r.get_data(as_text=True)
    officer.get("/lang/vi")
    assert "Tìm theo tên" in officer.get("/ra/subscribers").get_data(as_text=True)


def test_home_page_in_both_languages(app, client):
    from flask import render_template, session
    with app.test_request_context("/"):
        html = render_template("index.html", cas=[], base_url="http://x")
        assert "Chưa có CA nào. Chạy <code>govca ca init-root</code> rồi" in html
        session["lang"] = "en"
        from flask_babel import refresh
        refresh()
        html = render_template("index.html", cas=[], base_url="http://x")
        assert "No CA yet. Run <code>govca ca init-root</code>, then" in html
    assert "Đăng nhập cổng đăng ký" in client.get("/").get_data(as_text=True)
