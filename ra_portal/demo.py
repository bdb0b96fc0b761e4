"""Demo data: the CA hierarchy, the 34 provinces of 2025 and some ministries with agencies and
units, and staff with Vietnamese names. Idempotent."""
from __future__ import annotations

import csv
import datetime as dt
import io
import random
from importlib import resources

from sqlalchemy import select

from ca.ceremony import CAParameters
from ca.keys import KeySpec
from ca.names import SubjectData, fold
from ca.registry import add_domain, add_organization, add_subscriber
from ca.store.models import Organization, RaDomain, Subscriber

MINISTRIES = [
    ("bonoivu", "Bộ Nội vụ"), ("botaichinh", "Bộ Tài chính"), ("boyte", "Bộ Y tế"),
    ("vanphongchinhphu", "Văn phòng Chính phủ"),
]
PROVINCE_DEPARTMENTS = ["Sở Nội vụ", "Sở Tài chính", "Sở Y tế", "Sở Khoa học và Công nghệ"]
UNITS = ["Văn phòng", "Phòng Tổ chức cán bộ", "Phòng Kế hoạch - Tài chính"]
MINISTRY_UNITS = ["Vụ Tổ chức cán bộ", "Văn phòng Bộ", "Vụ Kế hoạch - Tài chính"]
# CCCD province prefixes (Circular 59/2021/TT-BCA) for the provinces whose staff the demo has.
CCCD_PREFIX = {"hanoi": "001", "quangninh": "022"}

STAFF_NAMES = {
    "hanoi": ["Nguyễn Thị Ánh Tuyết", "Trần Văn Đức", "Lê Hoàng Phương", "Phạm Thị Hồng Nhung",
              "Đặng Quốc Bảo"],
    "quangninh": ["Vũ Thị Thu Hương", "Hoàng Minh Khôi", "Bùi Đức Thắng", "Đỗ Thị Lan Anh",
                  "Ngô Quang Vinh"],
}


def province_rows() -> list[tuple[str, str]]:
    """(new unit name, kind) for the 34 provinces and cities of the 2025 map."""
    text = resources.files("ca.data").joinpath("vn_provinces_2025_merger.csv").read_text("utf-8")
    seen: dict[str, str] = {}
    for row in csv.DictReader(io.StringIO(text)):
        seen.setdefault(row["new_unit"], row["new_unit_kind"])
    return list(seen.items())


def short_name(full: str) -> str:
    for prefix in ("Thành phố ", "Tỉnh "):
        if full.startswith(prefix):
            return full[len(prefix):]
    return full


def domain_code(full: str) -> str:
    return fold(short_name(full)).replace(" ", "").replace("-", "")


def seed_organisations(session, at: dt.datetime) -> int:
    created = 0
    existing = {c for (c,) in session.execute(select(RaDomain.code))}
    for full, _kind in province_rows():
        code = domain_code(full)
        if code in existing:
            continue
        dom = add_domain(session, code=code, name=full, kind="province",
                         locality=short_name(full), at=at)
        ubnd = add_organization(session, domain=dom, name=f"Ủy ban nhân dân {full}",
                                kind="agency", parent=None, at=at)
        for dept in PROVINCE_DEPARTMENTS:
            agency = add_organization(session, domain=dom, name=dept, kind="agency", parent=ubnd,
                                      at=at)
            for unit in UNITS:
                add_organization(session, domain=dom, name=unit, kind="unit", parent=agency, at=at)
        created += 1
    for code, name in MINISTRIES:
        if code in existing:
            continue
        dom = add_domain(session, code=code, name=name, kind="ministry", locality="Hà Nội", at=at)
        ministry = add_organization(session, domain=dom, name=name, kind="agency", parent=None,
                                    at=at)
        for unit in MINISTRY_UNITS:
            add_organization(session, domain=dom, name=unit, kind="unit", parent=ministry, at=at)
        created += 1
    return created


def seed_staff(session, at: dt.datetime, rng: random.Random) -> int:
    created = 0
    for code, names in STAFF_NAMES.items():
        dom = session.execute(select(RaDomain).where(RaDomain.code == code)).scalar_one()
        units = session.execute(select(Organization).where(
            Organization.domain_id == dom.id, Organization.kind == "unit")
            .order_by(Organization.id)).scalars().all()
        for i, name in enumerate(names, start=1):
            username = f"staff.{code}.{i}"
            if session.execute(select(Subscriber.id).where(Subscriber.username == username)).first():
                continue
            born = dt.date(1970 + rng.randrange(30), rng.randrange(1, 13), rng.randrange(1, 28))
            century = (0 if born.year < 2000 else 2) + (1 if "Thị" in name else 0)
            cccd = f"{CCCD_PREFIX[code]}{century}{born.year % 100:02d}{rng.randrange(10**6):06d}"
            add_subscriber(session, organization_id=units[(i - 1) % len(units)].id,
                           full_name=name, id_number=cccd, date_of_birth=born,
                           email=f"{username.replace('.', '-')}@{code}.gov.vn",
                           mobile=f"09{rng.randrange(10**8):08d}", position="Chuyên viên",
                           username=username, at=at, actor="system:demo")
            created += 1
    return created


def init_demo(services, echo=print) -> None:
    cer = services.ceremony(actor="system:demo")
    root = cer.init_root(CAParameters(
        name="root", key_spec=KeySpec("rsa", "3072"), validity_days=7305,
        subject=SubjectData(common_name="GovCA Root CA", organization="Ban Cơ yếu Chính phủ")))
    echo(("created" if root.created else "kept") + f" root CA {root.ca.subject}")
    issuing = cer.init_issuing(CAParameters(
        name="issuing", key_spec=KeySpec("rsa", "2048"), validity_days=3653,
        subject=SubjectData(common_name="GovCA Issuing CA", organization="Ban Cơ yếu Chính phủ")),
        parent="root", profile=services.profiles["sub-ca"])
    echo(("created" if issuing.created else "kept") + f" issuing CA {issuing.ca.subject}")
    now = services.clock.now()
    with services.db.transaction() as s:
        n = seed_organisations(s, now)
        m = seed_staff(s, now, random.Random(2025))
    echo(f"demo data: {n} new RA domains, {m} new staff")
