"""Audit viewer pages: scoped (a Quảng Ninh officer sees no Hà Nội event), filtered and paged,
read-only, every view and export audited; exports byte-exact; bad parameters answer 400."""
from __future__ import annotations

import csv
import html
import io
import re

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from ca import audit
from ca.store.models import AuditEvent, RaDomain

ROW = re.compile(r'<tr data-seq="(\d+)">(.*?)</tr>', re.S)


def seqs(page: str) -> list[int]:
    return [int(s) for s, _ in ROW.findall(page)]


@pytest.fixture
def events(db, clock):
    """A few events in Hà Nội and Quảng Ninh with Vietnamese details."""
    with db.transaction() as s:
        dom = dict(s.execute(select(RaDomain.code, RaDomain.id)).all())
        for i in range(7):
            audit.record(s, "subscriber.create", actor="user:ra.hanoi", at=clock.now(),
                         target=f"subscriber:hn{i}", domain_id=dom["hanoi"],
                         details={"full_name": f"Nguyễn Văn Hà {i}"})
        for i in range(3):
            audit.record(s, "request.approve", actor="user:approver.quangninh", at=clock.now(),
                         target=f"request:qn{i}", domain_id=dom["quangninh"],
                         details={"note": "Phê duyệt Quảng Ninh"})
    return dom


def _count(db, action):
    with db.transaction() as s:
        return s.execute(select(func.count()).select_from(AuditEvent)
                         .where(AuditEvent.action == action)).scalar_one()


def test_scope_officer_sees_own_domain_only_and_reading_is_audited(login_as, db, events):
    officer = login_as("ra.quangninh")
    before = _count(db, "audit.read")
    text = officer.get("/audit/").get_data(as_text=True)
    assert "Phê duyệt Quảng Ninh" in text and "Nguyễn Văn Hà" not in text
    with db.transaction() as s:
        domains = {seq: d for seq, d in s.execute(select(AuditEvent.seq, AuditEvent.domain_id))}
    assert seqs(text) and all(domains[q] == events["quangninh"] for q in seqs(text))
    assert _count(db, "audit.read") == before + 1
    # filtering on a Hà Nội target gives nothing, not an error
    assert seqs(officer.get("/audit/?target=subscriber:hn1").get_data(as_text=True)) == []
    # the centre sees both; filters by action, actor, target
    auditor = login_as("auditor")
    every = auditor.get("/audit/?per_page=500").get_data(as_text=True)
    assert "Nguyễn Văn Hà 3" in every and "Phê duyệt Quảng Ninh" in every
    one = auditor.get("/audit/?target=subscriber:hn3").get_data(as_text=True)
    assert len(seqs(one)) == 1 and "Nguyễn Văn Hà 3" in one
    acts = seqs(auditor.get("/audit/?action=request.&actor=user:approver.quangninh")
                .get_data(as_text=True))
    assert len(acts) == 3


def test_paging_newest_first(login_as, events):
    auditor = login_as("auditor")
    first = auditor.get("/audit/?action=subscriber.create&per_page=3").get_data(as_text=True)
    s1 = seqs(first)
    assert len(s1) == 3 and s1 == sorted(s1, reverse=True)
    nxt = html.unescape(re.search(r'rel="next" href="([^"]+)"', first).group(1))
    s2 = seqs(auditor.get(nxt).get_data(as_text=True))
    assert len(s2) == 3 and max(s2) < min(s1)


def test_time_range_filter(login_as, clock, events):
    auditor = login_as("auditor")
    today = clock.now().astimezone(__import__("ca.ra.workdays", fromlist=["VN_TZ"]).VN_TZ).date()
    assert seqs(auditor.get(f"/audit/?from={today.isoformat()}&to={today.isoformat()}"
                            "&action=request.").get_data(as_text=True))
    d = today.replace(year=today.year - 1)
    assert seqs(auditor.get(f"/audit/?to={d.strftime('%d/%m/%Y')}&action=request.")
                .get_data(as_text=True)) == []


def test_staff_is_refused_and_nothing_can_be_edited(login_as, events):
    staff = login_as("staff.hanoi.1")
    assert staff.get("/audit/").status_code == 403
    assert staff.get("/audit/export.csv").status_code == 403
    auditor = login_as("auditor")
    for method in ("post", "put", "delete"):
        r = getattr(auditor.client, method)("/audit/")
        assert r.status_code == 405
    page = auditor.get("/audit/").get_data(as_text=True)
    assert page.count('method="post"') == 1 and 'action="/logout"' in page  # only log out
    app = auditor.client.application
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/audit"):
            assert rule.methods <= {"GET", "HEAD", "OPTIONS"}, rule


@pytest.mark.parametrize("query", ["per_page=0", "per_page=abc", "per_page=501", "before=x",
                                   "from=2026-13-01", "from=hôm qua", "to=31/02/2026",
                                   "from=2026-05-02&to=2026-05-01", "actor=" + "a" * 201,
                                   "target=%01x"])
def test_bad_parameters_answer_400_in_vietnamese(login_as, db, query, events):
    before = _count(db, "audit.read")
    r = login_as("auditor").get(f"/audit/?{query}")
    assert r.status_code == 400
    assert re.search(r"phải|quá dài|Ngày kết thúc", r.get_data(as_text=True))
    assert login_as("auditor").get(f"/audit/export.xlsx?{query}").status_code == 400
    assert _count(db, "audit.read") == before  # nothing read, nothing recorded


def test_export_is_audited_and_byte_exact(login_as, db, events):
    officer = login_as("ra.quangninh")
    before = _count(db, "audit.read.export")
    r = officer.get("/audit/export.csv?action=request.")
    assert r.status_code == 200
    raw = r.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0][1] == "Thời điểm (giờ Việt Nam)" and len(rows) == 4
    assert all(r[2] == "request.approve" for r in rows[1:])
    assert '"{""note"":""Phê duyệt Quảng Ninh""}"\r\n'.encode() in raw
    assert rows[1][6] == '{"note":"Phê duyệt Quảng Ninh"}'
    assert "Nguyễn Văn Hà".encode() not in raw
    x = officer.get("/audit/export.xlsx?action=request.")
    ws = load_workbook(io.BytesIO(x.get_data())).active
    values = [list(v) for v in ws.iter_rows(values_only=True)]
    assert [[str(c) for c in v] for v in values] == rows
    assert _count(db, "audit.read.export") == before + 2
    with db.transaction() as s:
        last = s.execute(select(AuditEvent).where(AuditEvent.action == "audit.read.export")
                         .order_by(AuditEvent.seq.desc())).scalars().first()
        assert last.actor == "user:ra.quangninh" and last.domain_id == events["quangninh"]
