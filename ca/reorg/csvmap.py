"""The 2025 province merger (old_unit,new_unit,new_unit_kind) as plan items."""
from __future__ import annotations

import csv
import io
import unicodedata
from importlib import resources

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.errors import InvalidInput, NotFound
from ca.reorg.structure import domain_code
from ca.store.models import RaDomain

COLUMNS = ("old_unit", "new_unit", "new_unit_kind")
MAX_ROWS = 1000


def builtin_csv() -> str:
    return resources.files("ca.data").joinpath("vn_provinces_2025_merger.csv").read_text("utf-8")


def parse_rows(text: str) -> list[tuple[str, str]]:
    text = unicodedata.normalize("NFC", text.lstrip("\ufeff"))
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or any(c not in reader.fieldnames for c in COLUMNS[:2]):
        raise InvalidInput("the mapping needs the columns old_unit,new_unit[,new_unit_kind]",
                           field="file")
    rows: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for n, row in enumerate(reader, start=2):
        if n > MAX_ROWS:
            raise InvalidInput(f"the mapping has more than {MAX_ROWS} rows", field="file")
        old, new = (row.get("old_unit") or "").strip(), (row.get("new_unit") or "").strip()
        if not old or not new:
            raise InvalidInput(f"line {n}: old_unit and new_unit are required", field="file")
        if old in seen:
            raise InvalidInput(f"line {n}: {old} is mapped twice (also on line {seen[old]})",
                               field="file", code="mapped_twice")
        seen[old] = n
        rows.append((old, new))
    if not rows:
        raise InvalidInput("the mapping is empty", field="file")
    return rows


def _find(session: Session, name: str) -> RaDomain | None:
    return session.execute(select(RaDomain).where(
        (RaDomain.name == name) | (RaDomain.code == domain_code(name)))).scalars().first()


def items_from_csv(session: Session, text: str, *, skip_missing: bool = False
                   ) -> tuple[list[dict], list[str]]:
    """One merge_province item per new province that absorbs others. A province mapped to
    itself is unchanged. Unknown old provinces are an error (or skipped and listed)."""
    rows = parse_rows(text)
    groups: dict[str, list[str]] = {}
    for old, new in rows:
        if old != new:
            groups.setdefault(new, []).append(old)
    items, skipped = [], []
    for new, olds in groups.items():
        sources = []
        for old in olds:
            dom = _find(session, old)
            if dom is None:
                if skip_missing:
                    skipped.append(old)
                    continue
                raise NotFound(f"unknown unit: the old province {old!r} is not an RA domain "
                               f"(register it, or load with --skip-missing)",
                               field="file", code="unknown_unit")
            sources.append(dom.code)
        if not sources:
            continue
        target = _find(session, new)
        item = {"kind": "merge_province", "sources": sources}
        if target is not None:
            item["target"] = target.code
        else:
            item["target_name"] = new
        items.append(item)
    if not items:
        raise InvalidInput("nothing to merge: no old province of the mapping is registered",
                           field="file")
    return items, skipped
