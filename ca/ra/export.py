"""The subscriber list in the 19-column template, as CSV (UTF-8 with BOM) or XLSX, in scope."""
from __future__ import annotations

import csv
import io

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.ra.bulk_import import COLUMNS
from ca.ra.roles import Caller
from ca.ra.scope import Scope
from ca.store.models import Certificate, Organization, RaDomain, Subscriber

MAX_EXPORT = 100_000


def _org_path(orgs: dict[int, Organization], org_id: int) -> tuple[list[str], str]:
    """(agency names level 1-4, unit name) from the root down."""
    chain, seen = [], set()
    node = orgs.get(org_id)
    while node is not None and node.id not in seen:
        seen.add(node.id)
        chain.append(node)
        node = orgs.get(node.parent_id) if node.parent_id else None
    chain.reverse()
    agencies = [o.name for o in chain if o.kind != "unit"][:4]
    units = [o.name for o in chain if o.kind == "unit"]
    return agencies + [""] * (4 - len(agencies)), units[-1] if units else ""


def rows(session: Session, caller: Caller) -> list[list[str]]:
    """One row per subscriber in the caller's scope, in the template's column order."""
    scope = Scope(session, caller)
    subs = session.execute(select(Subscriber).where(scope.subscribers())
                           .order_by(Subscriber.search_name, Subscriber.id)
                           .limit(MAX_EXPORT)).scalars().all()
    domain_ids = {s.domain_id for s in subs}
    orgs = {o.id: o for o in session.execute(select(Organization).where(
        Organization.domain_id.in_(domain_ids))).scalars()} if subs else {}
    domains = {d.id: d for d in session.execute(select(RaDomain).where(
        RaDomain.id.in_(domain_ids))).scalars()} if subs else {}
    latest: dict[int, str] = {}
    if subs:
        for sid, serial in session.execute(select(Certificate.subscriber_id, Certificate.serial)
                                           .where(scope.certificates(),
                                                  Certificate.revoked_at.is_(None))
                                           .order_by(Certificate.id)):
            latest[sid] = serial
    out = []
    for n, s in enumerate(subs, start=1):
        agencies, unit = _org_path(orgs, s.organization_id)
        out.append([str(n), s.full_name,
                    s.date_of_birth.strftime("%d/%m/%Y") if s.date_of_birth else "",
                    s.id_type, s.id_number, "", "", s.email or "", s.mobile or "",
                    s.position or "", *agencies, unit, domains[s.domain_id].name,
                    s.device_type, latest.get(s.id, ""), ""])
    return out


def _defuse(value: str) -> str:
    """A cell Excel would run as a formula gets a leading apostrophe (OWASP CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def to_csv(table: list[list[str]]) -> bytes:
    """UTF-8 with a BOM so that Excel shows Vietnamese correctly; CRLF line ends."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([h for _, h in COLUMNS])
    writer.writerows([[_defuse(c) for c in row] for row in table])
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")


def to_xlsx(table: list[list[str]]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Thuê bao")

    def text(value: str):
        cell = WriteOnlyCell(ws, value=value)
        cell.data_type = "s"  # text, never a formula; ID numbers keep their leading zeros
        return cell
    ws.append([text(h) for _, h in COLUMNS])
    for row in table:
        ws.append([text(c) for c in row])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
