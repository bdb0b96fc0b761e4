"""Bulk import (CSV and XLSX, 19 columns, all or nothing, per-row report) and export
(UTF-8 with BOM, XLSX as text), byte-exact Vietnamese, through the pages."""
from __future__ import annotations

import csv
import io
import unicodedata

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import func, select

from ca.ra.bulk_import import COLUMNS
from ca.store.models import Subscriber

HEADER = [h for _, h in COLUMNS]
UBND = "Ủy ban nhân dân Thành phố Hà Nội"


def row(n, name, cccd, email, **over):
    base = {"stt": str(n), "full_name": name, "date_of_birth": "12/04/1985", "id_type": "CCCD",
            "id_number": cccd, "id_issued_on": "01/07/2021", "id_issued_at": "Cục Cảnh sát QLHC",
            "email": email, "mobile": "0912345678", "position": "Chuyên viên", "org1": UBND,
            "org2": "Sở Y tế", "org3": "", "org4": "", "unit": "Văn phòng",
            "province": "Thành phố Hà Nội", "device_type": "TOKEN", "old_serial": "", "note": ""}
    base.update(over)
    return [base[k] for k, _ in COLUMNS]


GOOD = [row(1, "Nguyễn Văn Bình", "001085000001", "nv.binh@hanoi.gov.vn"),
        row(2, "Lê Thị Hằng", "001185000002", "lt.hang@hanoi.gov.vn", device_type="sim"),
        row(3, "Đỗ Đức Mạnh", "001085000003", "dd.manh@hanoi.gov.vn", unit="",
            org2="Sở Tài chính")]


def as_csv(rows, bom=True, delimiter=","):
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter).writerows([HEADER] + rows)
    return (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8")


def as_xlsx(rows):
    wb = Workbook()
    ws = wb.active
    ws.append(HEADER)
    for r in rows:
        ws.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def upload(officer, data, name):
    return officer.post("/ra/import", {"file": (io.BytesIO(data), name)},
                        content_type="multipart/form-data")


def count(db):
    with db.transaction() as s:
        return s.execute(select(func.count()).select_from(Subscriber)).scalar_one()


@pytest.fixture
def officer(login_as):
    return login_as("ra.hanoi")


@pytest.mark.parametrize("kind", ["csv", "csv-semicolon", "xlsx"])
def test_import_good_file(officer, db, kind):
    before = count(db)
    data = {"csv": as_csv(GOOD), "csv-semicolon": as_csv(GOOD, bom=False, delimiter=";"),
            "xlsx": as_xlsx(GOOD)}[kind]
    r = upload(officer, data, "ds." + kind.split("-")[0])
    assert r.status_code == 200, r.get_data(as_text=True)[-1500:]
    assert "Đã nhập 3 thuê bao" in r.get_data(as_text=True)
    assert count(db) == before + 3
    with db.transaction() as s:
        names = set(s.execute(select(Subscriber.full_name).where(
            Subscriber.id_number.in_(["001085000001", "001185000002", "001085000003"]))).scalars())
    assert names == {"Nguyễn Văn Bình", "Lê Thị Hằng", "Đỗ Đức Mạnh"}


def test_broken_rows_import_nothing_and_report_each_row(officer, db):
    before = count(db)
    rows = GOOD + [
        row(4, "Sai CCCD", "12345", "a@hanoi.gov.vn"),
        row(5, "Trùng Trong Tệp", "001085000001", "b@hanoi.gov.vn"),
        row(6, "Không Rõ Cơ Quan", "001085000006", "c@hanoi.gov.vn", org2="Sở Không Có"),
        row(7, "Ký\x07Tự", "001085000007", "d@hanoi.gov.vn"),
        row(8, "Sai Ngày", "001085000008", "e@hanoi.gov.vn", date_of_birth="32/13/1985"),
        row(9, "Tỉnh Khác", "001085000009", "f@hanoi.gov.vn", province="Tỉnh Quảng Ninh"),
        row(10, "Đã Có", "001187878216", "g@hanoi.gov.vn", date_of_birth="",),
        row(11, "", "001085000011", "h@hanoi.gov.vn"),
    ]
    r = upload(officer, as_csv(rows), "ds.csv")  # XLSX cannot even hold a BEL character
    html = r.get_data(as_text=True)
    assert r.status_code == 400
    assert "không dòng nào được nhập" in html
    expected = {5: "Số CCCD/CMND/Hộ chiếu", 6: "Số CCCD/CMND/Hộ chiếu", 7: "Cơ quan cấp 2",
                8: "Họ và tên", 9: "Ngày sinh", 10: "Tỉnh/Thành phố",
                11: "Số CCCD/CMND/Hộ chiếu", 12: "Họ và tên"}
    for line, field in expected.items():
        assert f"<tr><td>{line}</td><td>Trường «{field}»" in html, (line, field)
    assert count(db) == before


def test_other_provinces_organisations_are_unknown(login_as, db):
    qn = login_as("ra.quangninh")
    before = count(db)
    r = upload(qn, as_csv(GOOD[:1]), "ds.csv")
    assert r.status_code == 400 and "Cơ quan cấp 1" in r.get_data(as_text=True)
    assert count(db) == before


@pytest.mark.parametrize("data,name,words", [
    (b"", "a.csv", "Tệp dữ liệu"),
    (b"\xff\xfe\x00bad", "a.csv", "UTF-8"),
    (b"PK\x03\x04garbage", "a.xlsx", "không đọc được tệp"),
    ("Họ tên,CCCD\nA,1\n".encode(), "a.csv", "19 cột"),
    (as_csv([]), "a.csv", "Tệp dữ liệu"),
    (as_csv([row(1, "A", "001085000001", "a@b.vn") + ["thừa"]]), "a.csv", "19 cột"),
])
def test_broken_files(officer, db, data, name, words):
    before = count(db)
    r = upload(officer, data, name)
    assert 400 <= r.status_code < 500
    assert words in r.get_data(as_text=True)
    assert count(db) == before


def test_import_needs_write_rights(login_as):
    approver = login_as("approver.hanoi")
    assert approver.get("/ra/import").status_code == 403


def test_export_csv_and_xlsx_byte_exact(officer, db):
    upload(officer, as_csv(GOOD), "ds.csv")
    body = officer.get("/ra/export.csv").data
    assert body.startswith(b"\xef\xbb\xbf")
    text = body[3:].decode("utf-8")
    assert unicodedata.is_normalized("NFC", text)
    assert "Nguyễn Văn Bình".encode() in body and "Sở Y tế".encode() in body
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == HEADER and all(len(r) == 19 for r in table)
    assert len(table) == 1 + 5 + 3  # the demo's five Hà Nội staff and the imported three
    ids = {r[4] for r in table[1:]}
    assert "001085000001" in ids and all(len(i) == 12 for i in ids)
    wb = load_workbook(io.BytesIO(officer.get("/ra/export.xlsx").data))
    rows = [[c if c is not None else "" for c in r] for r in wb.active.iter_rows(values_only=True)]
    assert rows == [[c for c in r] for r in table]
    # What was exported imports again (after the people are removed it would recreate them):
    r = upload(officer, body, "lai.csv")
    assert r.status_code == 400 and "đã có thuê bao" in r.get_data(as_text=True)


def test_list_is_paginated(officer, db):
    rows = [row(i, f"Người Thử {i:02d}", f"0010850001{i:02d}", f"thu{i}@hanoi.gov.vn")
            for i in range(1, 31)]
    assert upload(officer, as_csv(rows), "ds.csv").status_code == 200
    first = officer.get("/ra/subscribers?q=nguoi thu").get_data(as_text=True)
    second = officer.get("/ra/subscribers?q=nguoi thu&page=2").get_data(as_text=True)
    assert "Tìm thấy 30 thuê bao" in first
    assert first.count("Người Thử") == 25 and second.count("Người Thử") == 5
    assert "Người Thử 01" in first and "Người Thử 30" in second
