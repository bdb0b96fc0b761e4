"""Fill a GovCA database with N certificates (default 1,000,000) across the 34 provinces of 2025:
realistic Vietnamese names from a small pool, the demo's organisations per province (People's
Committee, departments, units), 5 % revoked, validity spread over five years (some expired).

    .venv/bin/python bench/datagen.py --url sqlite:////tmp/govca-1m.sqlite3 --init --n 1000000
    .venv/bin/python bench/datagen.py --url postgresql+psycopg://postgres@127.0.0.1/govca_h_1m \
        --init --n 1000000

`--init` creates the tables (metadata.create_all; use `govca db upgrade` for a real instance),
the demo provinces and organisations, and a root + issuing CA made by the key ceremony in a
throw-away SoftHSM token. Without it the database must already have them (e.g. a demo instance).

Certificate DER: a documented **stand-in**. Every row gets real, distinct serials, subjects,
SPKI hashes, validity and revocation data (what OCSP, CRLs, reports and issuance read), but the
`der` column holds the same short marker for every generated row (`DATAGEN_DER`), and
`fingerprint_sha256` is NULL. Why: signing a million certificates in SoftHSM and storing ~1.2 KB
each would take ~15 minutes and ~1.2 GB without changing any query measured here; no measured
path reads `der` of other certificates (the CRL and OCSP builders read serial, revocation time
and reason; reports read dates and states). Do not serve these rows through the API.

Bulk load: PostgreSQL COPY (psycopg 3), SQLite executemany in 50k-row transactions.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATAGEN_DER = b"GOVCA-DATAGEN-STAND-IN"
REVOKED_SHARE = 0.05
CERTS_PER_SUBSCRIBER = 1.25  # a quarter of the staff have a second (renewed/changed) certificate

SURNAMES = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng",
            "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý"]
MIDDLE_M = ["Văn", "Hữu", "Đức", "Minh", "Quốc", "Thành", "Công", "Xuân"]
MIDDLE_F = ["Thị", "Thu", "Ngọc", "Thanh", "Minh", "Kim", "Hồng", "Phương"]
GIVEN_M = ["An", "Bình", "Cường", "Dũng", "Hải", "Hùng", "Khánh", "Long", "Nam", "Phong",
           "Quang", "Sơn", "Thắng", "Trung", "Tuấn", "Việt"]
GIVEN_F = ["Anh", "Chi", "Dung", "Giang", "Hà", "Hạnh", "Hương", "Lan", "Linh", "Mai", "Nga",
           "Oanh", "Phượng", "Thảo", "Trang", "Yến"]
POSITIONS = ["Chuyên viên", "Chuyên viên chính", "Trưởng phòng", "Phó Trưởng phòng",
             "Giám đốc", "Phó Giám đốc", "Văn thư", "Kế toán viên"]
DEVICES = ["TOKEN"] * 73 + ["SIM"] * 7 + ["RSSP"] * 3 + ["SOFT"] * 17
REASONS = ["superseded", "affiliationChanged", "cessationOfOperation", "keyCompromise",
           "privilegeWithdrawn"]


def province_weights(codes: list[str]) -> dict[str, int]:
    """Relative size of each province (Hà Nội and TP Hồ Chí Minh largest), deterministic."""
    big = {"hanoi": 8, "hochiminh": 8, "haiphong": 4, "danang": 3}
    return {c: big.get(c, 1 + (int(hashlib.sha256(c.encode()).hexdigest(), 16) % 3))
            for c in codes}


def plan(n: int, codes: list[str]) -> dict[str, int]:
    """Certificates per province: proportional to the weights, summing exactly to n."""
    w = province_weights(codes)
    total = sum(w.values())
    out = {c: n * w[c] // total for c in codes}
    for c in sorted(codes, key=lambda c: -w[c])[: n - sum(out.values())]:
        out[c] += 1
    return out


def init_database(url: str, echo=print) -> None:
    """Tables, demo provinces/organisations, and a root + issuing CA (throw-away token)."""
    from bench.ocsp_crl import hsm_config, make_token
    from ca.ceremony import CAParameters, Ceremony
    from ca.clock import SystemClock
    from ca.keys import KeySpec
    from ca.names import SubjectData
    from ca.profiles import builtin_profiles
    from ca.store import schema  # noqa: F401
    from ca.store.base import Base
    from ca.store.database import Database, make_engine
    from hsm.store import HsmKeyStore
    from ra_portal import demo
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    db, clock = Database(engine), SystemClock()
    with db.transaction() as s:
        demo.seed_organisations(s, clock.now())
    from ca.store.models import CertificateAuthority
    from sqlalchemy import select
    with db.transaction() as s:
        have = s.execute(select(CertificateAuthority.id).where(
            CertificateAuthority.name == "issuing")).first()
    if not have:
        tmp = Path(tempfile.mkdtemp(prefix="govca-datagen-"))
        make_token(tmp)
        keys = HsmKeyStore(hsm_config(tmp))
        cer = Ceremony(db, keys, clock, "http://127.0.0.1:8080", actor="datagen")
        org = "Ban Cơ yếu Chính phủ"
        cer.init_root(CAParameters(name="root", key_spec=KeySpec("rsa", "3072"),
                                   validity_days=3650, subject=SubjectData(
                                       common_name="Datagen Root", organization=org)))
        cer.init_issuing(CAParameters(name="issuing", key_spec=KeySpec("rsa", "2048"),
                                      validity_days=3650, subject=SubjectData(
                                          common_name="Datagen Issuing", organization=org)),
                         parent="root", profile=builtin_profiles()["sub-ca"])
        keys.close()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)  # the CA keys are not needed for the data
        echo("created root + issuing CA (their throw-away token is deleted)")
    engine.dispose()


def generate(url: str, n: int, *, ca: str = "issuing", seed: int = 2025, progress: bool = True,
             now: dt.datetime | None = None) -> dict:
    """Insert n certificates (and their subscribers). Returns the plan: per-province counts and
    the number revoked."""
    from sqlalchemy import select
    from ca.names import fold
    from ca.store.database import make_engine
    from ca.store.models import (Certificate, CertificateAuthority, Organization, RaDomain,
                                 Subscriber)
    engine = make_engine(url)
    rng = random.Random(seed)
    now = (now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    with engine.connect() as conn:
        ca_row = conn.execute(select(CertificateAuthority.id, CertificateAuthority.subject)
                              .where(CertificateAuthority.name == ca)).one()
        doms = conn.execute(select(RaDomain.id, RaDomain.code, RaDomain.locality).where(
            RaDomain.kind == "province").order_by(RaDomain.id)).all()
        units = conn.execute(select(Organization.id, Organization.domain_id, Organization.name,
                                    Organization.parent_id).where(Organization.kind == "unit")
                             ).all()
        agencies = dict(conn.execute(select(Organization.id, Organization.name)).all())
        first_sub = (conn.execute(select(Subscriber.id).order_by(Subscriber.id.desc())
                                  .limit(1)).scalar() or 0) + 1
    if len(doms) != 34:
        raise SystemExit(f"expected the 34 provinces of 2025, found {len(doms)}")
    units_of: dict[int, list] = {}
    for u in units:
        units_of.setdefault(u.domain_id, []).append(u)
    per_province = plan(n, [d.code for d in doms])
    n_revoked = 0
    subs: list[tuple] = []
    certs: list[tuple] = []
    sub_id = first_sub
    i = 0  # certificate index over the whole run
    for d in doms:
        count = per_province[d.code]
        k = 0
        while k < count:
            unit = rng.choice(units_of[d.id])
            female = rng.random() < 0.5
            full = " ".join([rng.choice(SURNAMES), rng.choice(MIDDLE_F if female else MIDDLE_M),
                             rng.choice(GIVEN_F if female else GIVEN_M)])
            born = dt.date(1965 + rng.randrange(35), rng.randrange(1, 13), rng.randrange(1, 28))
            created = now - dt.timedelta(days=rng.randrange(5 * 365))
            subs.append((sub_id, "person", d.id, unit.id, full, fold(full), "CCCD",
                         f"{sub_id:012d}", born, f"u{sub_id}@{d.code}.gov.vn",
                         f"09{rng.randrange(10**8):08d}", rng.choice(POSITIONS),
                         rng.choice(DEVICES), None, created, created))
            subject = (f"CN={full},OU={unit.name},O={agencies.get(unit.parent_id, '')},"
                       f"L={d.locality},C=VN")
            n_here = 2 if (rng.random() < CERTS_PER_SUBSCRIBER - 1 and k + 1 < count) else 1
            for j in range(n_here):
                nb = created + dt.timedelta(days=j * 400 + rng.randrange(30), seconds=i % 86400)
                nb = min(nb, now - dt.timedelta(seconds=1))
                na = nb + dt.timedelta(days=3 * 365)
                revoked = i % 20 == 0  # exactly 5 %
                rev_at = reason = None
                if revoked:
                    n_revoked += 1
                    rev_at = nb + (now - nb) * rng.random()
                    reason = rng.choice(REASONS)
                serial = format(rng.getrandbits(159) | (1 << 158), "x")
                spki = hashlib.sha256(b"datagen-spki-%d-%d" % (seed, i)).hexdigest()
                certs.append((ca_row.id, serial, "issued", sub_id, "personal", subject, nb, na,
                              spki, spki, DATAGEN_DER, None, nb, nb, rev_at, reason))
                i += 1
                k += 1
            sub_id += 1
    sub_cols = ["id", "kind", "domain_id", "organization_id", "full_name", "search_name",
                "id_type", "id_number", "date_of_birth", "email", "mobile", "position",
                "device_type", "username", "created_at", "updated_at"]
    cert_cols = ["ca_id", "serial", "state", "subscriber_id", "profile", "subject", "not_before",
                 "not_after", "spki_sha256", "tbs_sha256", "der", "fingerprint_sha256",
                 "reserved_at", "issued_at", "revoked_at", "revocation_reason"]
    t0 = time.perf_counter()
    _load(engine, Subscriber.__table__, sub_cols, subs, progress, "subscribers")
    _load(engine, Certificate.__table__, cert_cols, certs, progress, "certificates")
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            from sqlalchemy import text
            conn.execute(text("SELECT setval(pg_get_serial_sequence('subscriber', 'id'), "
                              "(SELECT max(id) FROM subscriber))"))
        # VACUUM (not in a transaction) sets the visibility map: index-only scans for reports.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE subscriber"))
            conn.execute(text("VACUUM ANALYZE certificate"))
    else:
        with engine.begin() as conn:
            from sqlalchemy import text
            conn.execute(text("ANALYZE"))
    engine.dispose()
    return {"per_province": per_province, "revoked": n_revoked, "certificates": len(certs),
            "subscribers": len(subs), "load_s": time.perf_counter() - t0}


def _load(engine, table, cols, rows, progress, what, chunk=50_000) -> None:
    from tqdm import tqdm
    bar = tqdm(total=len(rows), desc=what, unit="rows", disable=not progress, mininterval=1)
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cur:
                with cur.copy(f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as cp:
                    for k, r in enumerate(rows):
                        cp.write_row(r)
                        if k % chunk == chunk - 1:
                            bar.update(chunk)
            raw.commit()
        finally:
            raw.close()
        bar.update(len(rows) - bar.n)
    else:
        from sqlalchemy import insert
        stmt = insert(table)
        for k in range(0, len(rows), chunk):
            part = [dict(zip(cols, r)) for r in rows[k:k + chunk]]
            with engine.begin() as conn:
                conn.execute(stmt, part)
            bar.update(len(part))
    bar.close()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="SQLAlchemy URL of the database to fill")
    ap.add_argument("--n", type=int, default=1_000_000, help="certificates to add")
    ap.add_argument("--ca", default="issuing")
    ap.add_argument("--init", action="store_true", help="create tables, provinces and CAs")
    ap.add_argument("--seed", type=int, default=2025)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.init:
        init_database(args.url)
    res = generate(args.url, args.n, ca=args.ca, seed=args.seed)
    by = Counter(res["per_province"])
    print(f"{res['certificates']:,} certificates ({res['revoked']:,} revoked) for "
          f"{res['subscribers']:,} subscribers in {len(by)} provinces, "
          f"{time.perf_counter() - t0:.0f} s (bulk load {res['load_s']:.0f} s); largest: "
          + ", ".join(f"{c} {v:,}" for c, v in by.most_common(3)))


if __name__ == "__main__":
    main()
