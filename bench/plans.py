"""Query plans and timings on a large database (made by bench/datagen.py): the OCSP status
lookup, the CRL query, and every report of ca/reports.py for the centre and for one province.

    .venv/bin/python bench/plans.py --url postgresql+psycopg://postgres@127.0.0.1/govca_h_1m
    .venv/bin/python bench/plans.py --url sqlite:////tmp/govca-1m.sqlite3 --no-plans

Prints, per query, the plan (EXPLAIN on PostgreSQL with ANALYZE, EXPLAIN QUERY PLAN on SQLite)
and, per report function, the median of 3 wall times.
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def explain(conn, stmt, analyze: bool) -> str:
    from sqlalchemy import text
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    sql = str(compiled)
    if conn.dialect.name == "postgresql":
        prefix = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " if analyze else "EXPLAIN "
        rows = conn.execute(text(prefix + sql)).scalars().all()
    else:
        rows = [" ".join(str(x) for x in r[1:]) for r in
                conn.execute(text("EXPLAIN QUERY PLAN " + sql)).all()]
    return "\n".join(rows)


def report_plans(engine, fn) -> list[tuple[str, str]]:
    """The plans of the statements `fn` runs that touch certificates or subscribers."""
    from sqlalchemy import event
    seen: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if ("certificate" in statement or "subscriber" in statement) and \
                not statement.lstrip().upper().startswith("EXPLAIN"):
            seen.append((statement, parameters))
    event.listen(engine, "before_cursor_execute", grab)
    try:
        fn()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    out = []
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for statement, params in seen:
            if engine.dialect.name == "postgresql":
                cur.execute("EXPLAIN (ANALYZE, COSTS OFF) " + statement, params)
                plan = "\n".join(r[0] for r in cur.fetchall())
            else:
                cur.execute("EXPLAIN QUERY PLAN " + statement, params)
                plan = "\n".join(str(r[-1]) for r in cur.fetchall())
            out.append((statement, plan))
        raw.rollback()
    finally:
        raw.close()
    return out


def timed(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> list[tuple[str, float]]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session
    from ca import reports
    from ca.ra.roles import Caller
    from ca.ra.scope import Scope
    from ca.store.database import make_engine
    from ca.store.models import Certificate, CertificateAuthority, RaDomain
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--province", default="hanoi")
    ap.add_argument("--no-plans", dest="plans", action="store_false")
    args = ap.parse_args(argv)
    engine = make_engine(args.url)
    now = dt.datetime.now(dt.timezone.utc)
    out: list[tuple[str, float]] = []
    with engine.connect() as conn:
        ca_id = conn.execute(select(CertificateAuthority.id).where(
            CertificateAuthority.name == "issuing")).scalar_one()
        serials = conn.execute(select(Certificate.serial).where(
            Certificate.ca_id == ca_id).limit(5)).scalars().all()
        dom_id = conn.execute(select(RaDomain.id).where(
            RaDomain.code == args.province)).scalar_one()
        n = conn.execute(select(Certificate.id).order_by(Certificate.id.desc()).limit(1)).scalar()
        print(f"database {engine.url.render_as_string(hide_password=True)}: ~{n:,} certificates")
        ocsp = select(Certificate.serial, Certificate.revoked_at,
                      Certificate.revocation_reason).where(
            Certificate.ca_id == ca_id, Certificate.serial.in_(serials[:1]),
            Certificate.state == "issued")
        crl = select(Certificate.serial, Certificate.revoked_at, Certificate.revocation_reason,
                     Certificate.invalidity_date).where(
            Certificate.ca_id == ca_id, Certificate.state == "issued",
            Certificate.revoked_at.is_not(None))
        delta = crl.where(Certificate.revoked_at >= now - dt.timedelta(days=1))
        for name, stmt in (("OCSP status lookup (crl/ocsp_store.py)", ocsp),
                           ("CRL entries, full (crl/publish.py)", crl),
                           ("CRL entries, delta (crl/publish.py)", delta)):
            t = timed(lambda: conn.execute(stmt).all())
            out.append((name, t))
            print(f"\n### {name}: {t * 1000:.1f} ms")
            if args.plans:
                print(explain(conn, stmt, analyze=True))
    central = Caller.system("bench")
    province = Caller(username="bench.province", role="ra_officer", domain_id=dom_id)
    for who, caller in (("centre", central), (args.province, province)):
        with Session(engine) as s:
            scope = Scope(s, caller)
            cases = [(f"certificate_status by {by}", lambda by=by: reports.certificate_status(
                s, scope, now, by=by)) for by in reports.GROUPINGS]
            cases += [("issued_per_month (12)", lambda: reports.issued_per_month(s, scope, now)),
                      ("staff_coverage", lambda: reports.staff_coverage(s, scope, now)),
                      ("requests_by_state", lambda: reports.requests_by_state(s, scope)),
                      ("turnaround", lambda: reports.turnaround(s, scope)),
                      ("overdue", lambda: reports.overdue(s, scope, now))]
            for name, fn in cases:
                t = timed(fn)
                out.append((f"report {name} [{who}]", t))
                print(f"report {name:<32} [{who:<8}] {t * 1000:8.1f} ms", flush=True)
                if args.plans:
                    for sql, plan in report_plans(engine, fn):
                        print(f"  SQL: {' '.join(sql.split())[:400]}\n" + "\n".join(
                            "    " + line for line in plan.splitlines()))
    print("\n| query | median of 3 |\n|---|---|")
    for name, t in out:
        print(f"| {name} | {t * 1000:,.1f} ms |")
    engine.dispose()
    return out


if __name__ == "__main__":
    main()
