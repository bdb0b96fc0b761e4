"""Bulk registration from the 19-column spreadsheet used in practice: all rows or none."""
from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from ca.clock import Clock
from ca.errors import CAError, InvalidInput
from ca.names import fold
from ca.ra.form01 import parse_form01
from ca.ra.roles import Caller
from ca.ra.scope import Scope
from ca.ra.subscribers import register, require_active_domain
from ca.ra.workdays import VN_TZ
from ca.store.database import Database
from ca.store.models import Organization, RaDomain, Subscriber

# (key, header) of the template's 19 columns, in order (DOMAIN.md "Registration data").
COLUMNS = [
    ("stt", "STT"), ("full_name", "Họ và tên"), ("date_of_birth", "Ngày sinh"),
    ("id_type", "Loại giấy tờ"), ("id_number", "Số CCCD/CMND/Hộ chiếu"),
    ("id_issued_on", "Ngày cấp"), ("id_issued_at", "Nơi cấp"),
    ("email", "Thư điện tử công vụ"), ("mobile", "Số điện thoại di động"),
    ("position", "Chức vụ"), ("org1", "Cơ quan cấp 1"), ("org2", "Cơ quan cấp 2"),
    ("org3", "Cơ quan cấp 3"), ("org4", "Cơ quan cấp 4"), ("unit", "Đơn vị (phòng, ban)"),
    ("province", "Tỉnh/Thành phố"), ("device_type", "Loại thiết bị"),
    ("old_serial", "Số hiệu chứng thư cũ"), ("note", "Ghi chú"),
]
KEYS = [k for k, _ in COLUMNS]
MAX_ROWS = 5000
MAX_BYTES = 5 * 1024 * 1024
ORG_KEYS = ("org1", "org2", "org3", "org4", "unit")


@dataclass(frozen=True)
class RowError:
    row: int  # spreadsheet row number (the header is row 1)
    error: CAError


@dataclass
class ImportReport:
    rows: int = 0
    created: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _rows_from_table(table: list[list]) -> list[tuple[int, dict]]:
    """(row number, {key: text}) after checking the header row."""
    if not table:
        raise InvalidInput("the file is empty", field="file", code="required")
    header = [fold(_cell(c)) for c in table[0]][:len(COLUMNS)]
    if header != [fold(h) for _, h in COLUMNS]:
        raise InvalidInput("the first row must be the 19 column headers of the template",
                           field="file", code="bad_template")
    out = []
    for number, raw in enumerate(table[1:], start=2):
        cells = [_cell(c) for c in raw]
        if not any(cells):
            continue
        if len(cells) > len(COLUMNS) and any(cells[len(COLUMNS):]):
            raise InvalidInput(f"row {number} has more than 19 columns", field="file",
                               code="bad_template", row=number)
        out.append((number, dict(zip(KEYS, cells + [""] * (len(COLUMNS) - len(cells))))))
    if len(out) > MAX_ROWS:
        raise InvalidInput(f"at most {MAX_ROWS} rows per file", field="file", code="too_large")
    if not out:
        raise InvalidInput("the file has no data rows", field="file", code="required")
    return out


def read_table(data: bytes, filename: str) -> list[tuple[int, dict]]:
    """Rows of a CSV (UTF-8, with or without BOM; comma, semicolon or tab) or XLSX file."""
    if len(data) > MAX_BYTES:
        raise InvalidInput("the file is too large", field="file", code="too_large")
    if filename.lower().endswith(".xlsx") or data[:2] == b"PK":
        from openpyxl import load_workbook
        try:
            wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
            table = [list(r) for r in wb.worksheets[0].iter_rows(values_only=True)]
            wb.close()
        except Exception:
            raise InvalidInput("not a readable XLSX workbook", field="file",
                               code="bad_file") from None
        return _rows_from_table(table)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("a CSV file must be encoded in UTF-8", field="file",
                           code="bad_encoding") from None
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)
    try:
        table = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error:
        raise InvalidInput("not a readable CSV file", field="file", code="bad_file") from None
    return _rows_from_table(table)


def _date(value: str, name: str) -> str | None:
    """dd/mm/yyyy (as written in Vietnam) or ISO yyyy-mm-dd -> ISO."""
    if not value:
        return None
    for fmt in ("%d/%m/%Y", "%Y-%m-%d", "%d-%m-%Y", "%d.%m.%Y"):
        try:
            return dt.datetime.strptime(value, fmt).date().isoformat()
        except ValueError:
            continue
    raise InvalidInput(f"{name} is not a date dd/mm/yyyy", field=name, code="invalid_date")


class OrgResolver:
    """Finds the organisation a row names (levels 1-4, then the unit) inside the scope."""

    def __init__(self, session: Session, caller: Caller) -> None:
        orgs = session.execute(select(Organization, RaDomain).join(RaDomain).where(
            Scope(session, caller).organizations(), Organization.active.is_(True))).all()
        self.children: dict[int | None, dict[str, Organization]] = {}
        self.domain_names: dict[int, set[str]] = {}
        ids = {o.id for o, _ in orgs}
        for org, dom in orgs:
            parent = org.parent_id if org.parent_id in ids else None
            self.children.setdefault(parent, {}).setdefault(fold(" ".join(org.name.split())), org)
            self.domain_names[dom.id] = {fold(dom.name), fold(dom.locality)}

    def resolve(self, row: dict) -> int:
        names = [(k, row[k]) for k in ORG_KEYS if row[k]]
        if not names:
            raise InvalidInput("organisation level 1 is required", field="org1",
                               code="required")
        parent, org = None, None
        for key, name in names:
            org = self.children.get(parent, {}).get(fold(" ".join(name.split())))
            if org is None:
                raise InvalidInput(f"unknown organisation {name!r}", field=key,
                                   code="unknown_organization")
            parent = org.id
        province = fold(row["province"]) if row["province"] else None
        if province and province not in self.domain_names.get(org.domain_id, set()) and not \
                any(province.endswith(n) or n.endswith(province)
                    for n in self.domain_names.get(org.domain_id, set())):
            raise InvalidInput("the province does not match the organisation",
                               field="province", code="unknown_organization")
        return org.id


def _body(row: dict, org_id: int) -> dict:
    body = {"full_name": row["full_name"], "id_number": row["id_number"],
            "email": row["email"], "organization_id": org_id}
    born = _date(row["date_of_birth"], "date_of_birth")
    for key, value in (("date_of_birth", born), ("id_type", row["id_type"].upper()),
                       ("mobile", row["mobile"]), ("position", row["position"]),
                       ("device_type", row["device_type"].upper())):
        if value:
            body[key] = value
    number = body["id_number"]
    if body.get("id_type", "CCCD") == "CCCD" and number.isdigit() and 9 < len(number) < 12:
        body["id_number"] = number.zfill(12)  # a spreadsheet number cell drops leading zeros
    return body


def import_rows(db: Database, clock: Clock, caller: Caller,
                rows: list[tuple[int, dict]]) -> ImportReport:
    """Check every row, then register them all in one transaction; any error stores nothing."""
    report = ImportReport(rows=len(rows))
    try:
        _import(db, clock, caller, rows, report)
    except _Abort:
        report.created.clear()
    return report


class _Abort(Exception):
    """Rolls the whole import back."""


def _import(db: Database, clock: Clock, caller: Caller, rows: list[tuple[int, dict]],
            report: ImportReport) -> None:
    today = clock.now().astimezone(VN_TZ).date()
    with db.transaction() as s:
        caller.require("subscriber.write")
        require_active_domain(s, caller)
        resolver = OrgResolver(s, caller)
        checked: list[tuple[int, dict]] = []
        seen: dict[tuple[str, str], int] = {}
        for number, row in rows:
            try:
                body = _body(row, resolver.resolve(row))
                _date(row["id_issued_on"], "id_issued_on")
                if row["old_serial"] and not all(c in "0123456789abcdefABCDEF:" for c in
                                                 row["old_serial"]):
                    raise InvalidInput("the old serial is hexadecimal", field="old_serial",
                                       code="invalid_serial")
                form = parse_form01(body, today)
                key = (form.id_type, form.id_number)
                if key in seen:
                    raise InvalidInput(f"same ID number as row {seen[key]}", field="id_number",
                                       code="duplicate_subscriber")
                seen[key] = number
                checked.append((number, body))
            except CAError as exc:
                report.errors.append(RowError(number, exc))
        if seen:
            pairs = list(seen)
            taken = set()
            for i in range(0, len(pairs), 500):
                taken.update((t, n) for t, n in s.execute(
                    select(Subscriber.id_type, Subscriber.id_number).where(
                        tuple_(Subscriber.id_type, Subscriber.id_number).in_(pairs[i:i + 500]))))
            for key in sorted(taken, key=seen.get):
                report.errors.append(RowError(seen[key], InvalidInput(
                    "already registered", field="id_number", code="duplicate_subscriber")))
        if report.errors:
            report.errors.sort(key=lambda e: e.row)
            raise _Abort()
        for number, body in checked:
            try:
                report.created.append(register(s, clock, caller, body).id)
            except CAError as exc:
                report.errors.append(RowError(number, exc))
                raise _Abort() from None
