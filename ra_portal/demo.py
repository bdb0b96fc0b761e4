"""Demo data: the CA hierarchy, the 34 provinces of 2025 and some ministries with agencies and
units, and staff with Vietnamese names. Idempotent."""
from __future__ import annotations

import csv
import datetime as dt
import io
import os
import random
from pathlib import Path
from importlib import resources

from sqlalchemy import inspect, select

from ca.ceremony import CAParameters
from ca.keys import KeySpec
from ca.names import SubjectData, fold
from ca.ra.roles import Caller
from ca.ra.users import create_user
from ca.ra.workdays import seed_holidays
from ca.store.models_ra import RaUser
from ca.registry import add_domain, add_organization, add_subscriber
from ca.store.models import Organization, RaDomain, Subscriber
from ca.store.models_org import OrganizationVersion, add_first_version

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


def backfill_versions(session, at: dt.datetime) -> int:
    """Version 1 for every organisation that has none yet (rows created before versions)."""
    have = select(OrganizationVersion.organization_id)
    rows = session.execute(select(Organization).where(Organization.id.not_in(have))
                           .order_by(Organization.id)).scalars().all()
    for org in rows:
        add_first_version(session, org, at=at, actor="system:demo")
    return len(rows)


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
    if inspect(services.db.engine).has_table(OrganizationVersion.__tablename__):
        with services.db.transaction() as s:  # organisations from before versions
            v = backfill_versions(s, now)
        if v:
            echo(f"organisation versions: {v} organisations given version 1")
    if not inspect(services.db.engine).has_table(RaUser.__tablename__):
        echo("RA portal tables are not in this database yet (the migration predates them): "
             "no demo users created")
        return
    with services.db.transaction() as s:
        seed_holidays(s)
        created = seed_users(s, now)
    path = Path(services.settings.instance) / "demo-credentials.txt"
    if created:
        write_credentials(path, created)
    echo(f"demo users: {len(created)} new; logins in {path}")


# Portal users of the demo (CONTRACT.md): (username, role, domain code).
DEMO_USERS = [("operator", "central_operator", None), ("auditor", "central_auditor", None),
              ("ra.hanoi", "ra_officer", "hanoi"), ("approver.hanoi", "ra_approver", "hanoi"),
              ("ra.quangninh", "ra_officer", "quangninh"),
              ("approver.quangninh", "ra_approver", "quangninh")]


def seed_users(session, at: dt.datetime) -> list[tuple[str, str, str, str | None]]:
    """Create the missing demo users; returns (username, role, password, TOTP secret) of the
    new ones, to be written to the credentials file and nowhere else."""
    system = Caller.system("demo")
    existing = set(session.execute(select(RaUser.username)).scalars())
    wanted = [(u, r, d, None) for u, r, d in DEMO_USERS]
    for code in STAFF_NAMES:
        for i in range(1, len(STAFF_NAMES[code]) + 1):
            username = f"staff.{code}.{i}"
            sub_id = session.execute(select(Subscriber.id).where(
                Subscriber.username == username)).scalar_one_or_none()
            if sub_id is not None:
                wanted.append((username, "subscriber", None, sub_id))
    created = []
    for username, role, domain, sub_id in wanted:
        if username in existing:
            continue
        new = create_user(session, system, username=username, role=role, at=at,
                          domain_code=domain, subscriber_ref=sub_id,
                          email=None if sub_id else  # example address for notices
                          f"{username.replace('.', '-')}@{domain or 'govca'}.gov.vn")
        created.append((username, role, new.password, new.totp_secret))
    return created


def write_credentials(path: Path, rows) -> None:
    """Append the new logins to the credentials file (mode 0600, created if absent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.chmod(path, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        if fh.tell() == 0:
            fh.write("# GovCA demo logins: username, role, password, TOTP secret (RFC 6238, "
                     "30 s, 6 digits).\n# Keep this file private; it is not a production "
                     "procedure.\n")
        for username, role, password, secret in rows:
            fh.write(f"{username}\t{role}\t{password}\t{secret or '-'}\n")
