"""Report pages: every table equals the ca.reports function (and direct SQL) on generated data,
scoped by the caller; CSV/XLSX exports byte-exact in Vietnamese; charts are well-formed SVG."""
from __future__ import annotations

import csv
import html
import io
import re
import xml.etree.ElementTree as ET

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from ca import reports
from ca.ra.roles import Caller
from ca.ra.scope import Scope
from ca.store.models import RaDomain
from tests.audit import reportdata
from tests.audit.test_reports import STATUS_SQL, _sql

SECTION = re.compile(r'<section class="report" id="(\w+)"[^>]*>(.*?)</section>', re.S)
CENTRAL = Caller(username="auditor", role="central_auditor")


def tables_of(page: str) -> dict[str, list[list[str]]]:
    """Each report section's body rows as text cells."""
    out = {}
    for name, body in SECTION.findall(page):
        out[name] = [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
                     for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]
        out[name] = [r for r in out[name] if r]
    return out


@pytest.fixture
def data(db, clock):
    return reportdata.generate(db, clock.now(), per_province=200)


def _names(db):
    with db.transaction() as s:
        return dict(s.execute(select(RaDomain.code, RaDomain.name)).all())


def test_centre_sees_every_figure_equal_to_the_functions_and_sql(login_as, db, clock, data):
    page = login_as("auditor").get("/reports/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    got = tables_of(text)
    assert set(got) == {"by_domain", "by_agency", "by_device", "per_month", "coverage",
                        "requests", "turnaround", "overdue"}
    want = {g: (a, e, r) for g, r, e, a in _sql(db, STATUS_SQL.format(extra=""), now=clock.now())}
    assert {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in got["by_domain"]} == want
    now = clock.now()
    with db.transaction() as s:
        sc = Scope(s, CENTRAL)
        dev = reports.certificate_status(s, sc, now, "device_type")
        agency = reports.certificate_status(s, sc, now, "agency")
        months = reports.issued_per_month(s, sc, now, 12)
        cov = reports.staff_coverage(s, sc, now)
        by_state = reports.requests_by_state(s, sc)
        overdue = reports.overdue(s, sc, now)
        ta = reports.turnaround(s, sc, "issue")
    assert [[r.group, str(r.active), str(r.expired), str(r.revoked), str(r.total)]
            for r in dev] == got["by_device"]
    assert len(got["by_agency"]) == len(agency)
    assert sum(int(r[4]) for r in got["by_agency"]) == sum(r.total for r in agency)
    assert [[m, str(n)] for m, n in months] == got["per_month"]
    assert [[r.group, str(r.staff), str(r.with_valid)] for r in cov] == \
        [r[:3] for r in got["coverage"]]
    assert sum(int(r[2]) for r in got["requests"]) == sum(by_state.values()) == data["requests"]
    assert [int(r[0]) for r in got["overdue"]] == [r.id for r in overdue]
    assert got["turnaround"][0][2] == str(ta.finished) and \
        got["turnaround"][0][3] == f"{ta.median_hours:.1f}"
    [(issued_total,)] = _sql(db, "SELECT COUNT(*) FROM certificate WHERE state = 'issued' "
                          "AND subscriber_id IS NOT NULL")
    assert sum(int(r[4]) for r in got["by_domain"]) == issued_total
    svgs = re.findall(r"<svg .*?</svg>", text, re.S)
    assert len(svgs) >= 6
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "<script" not in text and "cdn" not in text.lower()


def test_province_officer_sees_only_the_province(login_as, db, clock, data):
    names = _names(db)
    officer = login_as("ra.quangninh")
    text = officer.get("/reports/").get_data(as_text=True)
    got = tables_of(text)
    assert [r[0] for r in got["by_domain"]] == [names["quangninh"]]
    assert names["hanoi"] not in text and names["bacninh"] not in text
    dom = data["domains"]["quangninh"]
    [(n,)] = _sql(db, "SELECT COUNT(*) FROM certificate c JOIN subscriber s ON s.id = "
                      f"c.subscriber_id WHERE c.state = 'issued' AND s.domain_id = {dom}")
    assert int(got["by_domain"][0][4]) == n
    # another province's id answers like a missing one; the own id is accepted
    assert officer.get(f"/reports/?domain={data['domains']['hanoi']}").status_code == 404
    assert officer.get("/reports/?domain=999999").status_code == 404
    assert officer.get(f"/reports/?domain={dom}").status_code == 200
    assert officer.get(f"/reports/by_domain.csv?domain={data['domains']['hanoi']}"
                       ).status_code == 404
    # the centre narrowed to Quảng Ninh shows the same table
    central = tables_of(login_as("auditor").get(f"/reports/?domain={dom}").get_data(as_text=True))
    assert central["by_domain"] == got["by_domain"]


def test_staff_and_anonymous_are_refused(login_as, app, data):
    assert login_as("staff.hanoi.1").get("/reports/").status_code == 403
    assert login_as("staff.hanoi.1").get("/reports/by_domain.csv").status_code == 403
    assert app.test_client().get("/reports/").status_code in (302, 401)


@pytest.mark.parametrize("query", ["months=abc", "months=0", "months=121", "domain=x",
                                   "domain=-1", "months=%EF%BC%91", "domain=1e3"])
def test_bad_parameters_answer_400_in_vietnamese(login_as, query):
    r = login_as("auditor").get(f"/reports/?{query}")
    assert r.status_code == 400
    assert "phải là số nguyên" in r.get_data(as_text=True)
    assert login_as("auditor").get(f"/reports/coverage.xlsx?{query}").status_code == 400


def test_exports_are_byte_exact_vietnamese(login_as, db, clock, data):
    auditor = login_as("auditor")
    page = tables_of(auditor.get("/reports/").get_data(as_text=True))
    r = auditor.get("/reports/by_domain.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    raw = r.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == ["Nhóm", "Còn hiệu lực", "Hết hạn", "Đã thu hồi", "Tổng"]
    assert rows[1:] == page["by_domain"]
    names = _names(db)
    assert names["quangninh"].encode("utf-8") in raw  # NFC bytes, as stored
    x = auditor.get("/reports/by_domain.xlsx")
    assert x.status_code == 200 and x.get_data()[:2] == b"PK"
    ws = load_workbook(io.BytesIO(x.get_data())).active
    values = [list(r) for r in ws.iter_rows(values_only=True)]
    assert values[0] == rows[0]
    assert [[str(c) for c in r] for r in values[1:]] == page["by_domain"]
    for name in ("per_month", "coverage", "requests", "turnaround", "overdue", "by_agency",
                 "by_device"):
        csv_rows = list(csv.reader(io.StringIO(
            auditor.get(f"/reports/{name}.csv").get_data().decode("utf-8-sig"))))
        assert csv_rows[1:] == page[name], name


def test_pages_in_english(login_as):
    auditor = login_as("auditor")
    auditor.get("/lang/en")
    assert "Certificates by province, ministry or sector" in \
        auditor.get("/reports/").get_data(as_text=True)
    assert "Read only: nobody can edit" in auditor.get("/audit/").get_data(as_text=True)
    assert "Operations status" in auditor.get("/ops/").get_data(as_text=True)
    r = auditor.get("/reports/?months=0")
    assert r.status_code == 400 and "must be a whole number" in r.get_data(as_text=True)
