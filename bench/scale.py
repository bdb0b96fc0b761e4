"""Scale points of issue 8: issuance throughput on an empty database vs on a database filled
with 1,000,000 certificates (bench/datagen.py), and memory flatness over a 100,000-certificate
issue_batch run.

    .venv/bin/python bench/scale.py throughput --certs 1000000                 # SQLite
    .venv/bin/python bench/scale.py throughput --certs 1000000 \
        --pg postgresql+psycopg://postgres@127.0.0.1:5432                       # PostgreSQL
    .venv/bin/python bench/scale.py memory --total 100000                      # SQLite
    .venv/bin/python bench/scale.py throughput --quick ; bench/scale.py memory --quick

throughput: one process, one SoftHSM token, two databases of the same backend: E (empty: the
demo's 34 provinces, organisations and staff, a root + RSA-2048 `issuing` CA) and F (the same,
then `--certs` certificates added by bench/datagen.py). Each round measures the raw PKCS#11
rate of E's and F's issuing keys (1 thread), then `issue_batch` on E and on F in alternating
order from round to round (same batch size, same count, fresh CSRs made before the timing), so
load changes hit both sides alike; the medians of the rounds and the F/E difference (as is, and
with each side divided by its raw rate of the round) are printed. `--profile` adds, per
database, the time spent in each SQL statement during one measured batch run (what grows with
the table) and the query plans of the SELECTs.

memory: one process issues `--total` certificates with `issue_batch` (batches of `--batch`),
samples the RSS every `--every` certificates, prints the series and the least-squares slope
(MiB per 10,000 certificates, first sample excluded as warm-up).

PostgreSQL: `--pg` is a server URL without a database; the bench drops and creates
govca_h_scale_e and govca_h_scale_f (or govca_h_scale_mem) there (`--db-prefix`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.issuance import issue_batches as batch_run  # noqa: E402
from bench.issuance import make_csrs, rss_mib  # noqa: E402
from bench.ocsp_crl import hsm_config, make_token, raw_rate  # noqa: E402

BASE_URL = "http://127.0.0.1:8080"


def fresh_database(kind: str, tmp: Path, name: str, pg: str | None) -> str:
    """A new empty database: a SQLite file in tmp, or a dropped-and-created PostgreSQL db."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / (name + '.sqlite3')}"
    from sqlalchemy import create_engine, text
    server = pg.rstrip("/")
    eng = create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS govca_h_{name} WITH (FORCE)"))
        c.execute(text(f"CREATE DATABASE govca_h_{name}"))
    eng.dispose()
    return f"{server}/govca_h_{name}"


def prepare(url: str, keys, clock, ca_label: str):
    """Tables, the demo's 34 provinces, organisations and staff, root + RSA-2048 issuing CA
    (keys in the bench token). Returns (Database, issuing CA row, Hà Nội staff ids)."""
    from sqlalchemy import select
    from ca.ceremony import CAParameters, Ceremony
    from ca.keys import KeySpec
    from ca.names import SubjectData
    from ca.profiles import builtin_profiles
    from ca.store import schema  # noqa: F401
    from ca.store.base import Base
    from ca.store.database import Database, make_engine
    from ca.store.models import Subscriber
    from ra_portal import demo
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    db = Database(engine)
    now = clock.now()
    with db.transaction() as s:
        demo.seed_organisations(s, now)
        demo.seed_staff(s, now, random.Random(2025))
    with db.transaction() as s:
        demo.backfill_versions(s, now)
    org = "Ban Cơ yếu Chính phủ"
    cer = Ceremony(db, keys, clock, BASE_URL, actor="bench")
    cer.init_root(CAParameters(name="root", key_spec=KeySpec("rsa", "3072"), validity_days=3650,
                               subject=SubjectData(common_name=f"Scale Root {ca_label}",
                                                   organization=org)))
    issuing = cer.init_issuing(CAParameters(
        name="issuing", key_spec=KeySpec("rsa", "2048"), validity_days=1825,
        subject=SubjectData(common_name=f"Scale Issuing {ca_label}", organization=org)),
        parent="root", profile=builtin_profiles()["sub-ca"]).ca
    with db.transaction() as s:
        subs = [i for i, u in s.execute(select(Subscriber.id, Subscriber.username).where(
            Subscriber.kind == "person").order_by(Subscriber.id)).all()
            if u and u.startswith("staff.hanoi.")]
    return db, issuing, subs


SQLITE_CACHE_MIB = 0  # --sqlite-cache-mib: an experiment, not what GovCA itself sets


def with_sqlite_cache(engine):
    """PRAGMA cache_size on every new SQLite connection of `engine` (when asked for)."""
    if SQLITE_CACHE_MIB and engine.dialect.name == "sqlite":
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _cache(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_MIB * 1024}")
            cur.close()
    return engine


def attach(url: str):
    """An existing database prepared by `prepare` (for --reuse)."""
    from sqlalchemy import select
    from ca.store.database import Database, make_engine
    from ca.store.models import CertificateAuthority, Subscriber
    db = Database(with_sqlite_cache(make_engine(url)))
    with db.transaction() as s:
        ca = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == "issuing")).scalar_one()
        s.expunge(ca)
        subs = [i for i, u in s.execute(select(Subscriber.id, Subscriber.username).where(
            Subscriber.kind == "person").order_by(Subscriber.id)).all()
            if u and u.startswith("staff.hanoi.")]
    return db, ca, subs


def count_certificates(db) -> int:
    from sqlalchemy import func, select
    from ca.store.models import Certificate
    with db.transaction() as s:
        return s.execute(select(func.count()).select_from(Certificate)).scalar_one()


def issuance_service(db, keys, clock):
    from ca.issuance.service import IssuanceService
    from ca.profiles import builtin_profiles
    return IssuanceService(db, keys, clock, builtin_profiles(), BASE_URL)


class StatementTimer:
    """Wall time per SQL statement text on one engine (before/after cursor execute)."""

    def __init__(self, engine):
        from sqlalchemy import event
        self.engine, self.totals, self.params = engine, {}, {}
        self._t: list[float] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self._t.append(time.perf_counter())

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        dt_ = time.perf_counter() - self._t.pop()
        key = " ".join(statement.split())
        tot = self.totals.setdefault(key, [0, 0.0])
        tot[0] += 1
        tot[1] += dt_
        if not executemany:
            self.params.setdefault(key, parameters)

    def stop(self):
        from sqlalchemy import event
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


def explain(engine, statement: str, params) -> str:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            cur.execute("EXPLAIN (ANALYZE, COSTS OFF) " + statement, params)
            return "\n".join(r[0] for r in cur.fetchall())
        cur.execute("EXPLAIN QUERY PLAN " + statement, params)
        return "\n".join(str(r[-1]) for r in cur.fetchall())
    except Exception as exc:  # a plan we cannot get is reported, not fatal
        return f"(no plan: {type(exc).__name__}: {exc})"
    finally:
        raw.rollback()
        raw.close()


def throughput(args) -> dict:
    from ca.clock import SystemClock
    from hsm.store import HsmKeyStore
    from bench import datagen
    reuse = Path(args.reuse) if args.reuse else None
    tmp = reuse or Path(tempfile.mkdtemp(prefix="govca-scale-"))
    out: dict = {"backend": args.backend, "certs": args.certs, "count": args.count,
                 "batch": args.batch, "rounds": args.rounds, "load_start": os.getloadavg()}
    try:
        if reuse:  # a directory kept by --keep (token + SQLite files): no fill
            os.environ["SOFTHSM2_CONF"] = str(reuse / "softhsm2.conf")
        else:
            make_token(tmp)
        keys = HsmKeyStore(hsm_config(tmp))
        clock = SystemClock()
        if reuse:
            url_e = f"sqlite:///{reuse / (args.db_prefix + '_e.sqlite3')}"
            url_f = f"sqlite:///{reuse / (args.db_prefix + '_f.sqlite3')}"
            db_e, ca_e, subs_e = attach(url_e)
            db_f, ca_f, subs_f = attach(url_f)
            out["certs"] = count_certificates(db_f)
            print(f"reusing {reuse}: F has {out['certs']:,} certificates", flush=True)
        else:
            url_e = fresh_database(args.backend, tmp, f"{args.db_prefix}_e", args.pg)
            url_f = fresh_database(args.backend, tmp, f"{args.db_prefix}_f", args.pg)
            db_e, ca_e, subs_e = prepare(url_e, keys, clock, "E")
            db_f, ca_f, subs_f = prepare(url_f, keys, clock, "F")
            t0 = time.perf_counter()
            print(f"filling F with {args.certs:,} certificates (bench/datagen.py) ...",
                  flush=True)
            plan = datagen.generate(url_f, args.certs, progress=not args.no_progress)
            out["fill_s"] = time.perf_counter() - t0
            print(f"F: {plan['certificates']:,} certificates for {plan['subscribers']:,} "
                  f"subscribers in {out['fill_s']:.0f} s", flush=True)
        gc.collect()
        iss = {"E": issuance_service(db_e, keys, clock), "F": issuance_service(db_f, keys, clock)}
        subs = {"E": subs_e, "F": subs_f}
        key = {"E": keys.load(bytes.fromhex(ca_e.key_id)),
               "F": keys.load(bytes.fromhex(ca_f.key_id))}
        for side in "EF":  # warm: lint shape, key handle, connections, caches
            batch_run(iss[side], subs[side], make_csrs(min(args.batch * 2, args.count)),
                      args.batch)
        rounds = []
        for r in range(args.rounds):
            row = {"load": os.getloadavg()[0]}
            for side in "EF":
                row[f"raw_{side}"] = raw_rate(key[side], args.raw_seconds, 1)
            for side in ("EF" if r % 2 == 0 else "FE"):  # alternate who goes first
                res = batch_run(iss[side], subs[side], make_csrs(args.count), args.batch)
                if res["errors"]:
                    raise RuntimeError(f"{side}: {res['errors']} errors: {res['first_error']}")
                row[side] = res["rate"]
            row["diff"] = row["F"] / row["E"] - 1
            # the same difference with each side divided by its own raw rate of the round
            row["diff_raw_norm"] = (row["F"] / row["raw_F"]) / (row["E"] / row["raw_E"]) - 1
            rounds.append(row)
            print(f"round {r + 1}: load {row['load']:.2f}, raw 1t E {row['raw_E']:.0f}/s "
                  f"F {row['raw_F']:.0f}/s; issue_batch({args.batch}) E {row['E']:.1f}/s "
                  f"({row['E'] / row['raw_E']:.1%} of raw) F {row['F']:.1f}/s "
                  f"({row['F'] / row['raw_F']:.1%} of raw): F/E {row['diff']:+.1%} "
                  f"(raw-normalised {row['diff_raw_norm']:+.1%})", flush=True)
        out["rounds"] = rounds
        med = {k: statistics.median(r[k] for r in rounds) for k in ("E", "F", "raw_E", "raw_F")}
        out["median"] = med
        out["diff_median"] = statistics.median(r["diff"] for r in rounds)
        out["diff_raw_norm_median"] = statistics.median(r["diff_raw_norm"] for r in rounds)
        if args.profile:
            out["profile"] = {}
            for side, db in (("E", db_e), ("F", db_f)):
                timer = StatementTimer(db.engine)
                res = batch_run(iss[side], subs[side], make_csrs(args.count), args.batch)
                timer.stop()
                top = sorted(timer.totals.items(), key=lambda kv: -kv[1][1])[:12]
                out["profile"][side] = {"rate": res["rate"], "statements": [
                    {"sql": sql[:300], "calls": c, "ms": t * 1000,
                     "ms_per_cert": t * 1000 / max(res["n"], 1)} for sql, (c, t) in top]}
                print(f"\n## SQL time during {res['n']} certificates on {side} "
                      f"({res['rate']:.1f} certs/s)")
                for sql, (c, t) in top:
                    print(f"{t * 1000 / max(res['n'], 1):8.3f} ms/cert {c:6d} calls  {sql[:160]}")
                if side == "F":
                    out["plans"] = []
                    for sql, (c, t) in top:
                        if sql.upper().startswith("SELECT") and sql in timer.params:
                            p = explain(db.engine, sql, timer.params[sql])
                            out["plans"].append({"sql": sql[:400], "plan": p})
                            print(f"\nPLAN {sql[:200]}\n" + "\n".join(
                                "    " + ln for ln in p.splitlines()))
        out["load_end"] = os.getloadavg()
        for side in ("E", "F"):
            d = {"E": db_e, "F": db_f}[side]
            d.engine.dispose()
        keys.close()
    finally:
        if not (reuse or args.keep):
            shutil.rmtree(tmp, ignore_errors=True)
    if args.keep and not reuse:
        print(f"kept {tmp} (token and SQLite databases): rerun with --reuse {tmp}")
    m = out["median"]
    print(f"\n## issuance, empty vs {args.certs:,}-certificate database ({args.backend}), "
          f"issue_batch({args.batch}) x {args.count}, {args.rounds} round(s), load "
          f"{tuple(round(x, 2) for x in out['load_start'])} -> "
          f"{tuple(round(x, 2) for x in out['load_end'])}\n")
    print("| database | certs/s (median) | raw 1t sig/s (median) | ratio to raw |\n"
          "|---|---|---|---|")
    print(f"| empty | {m['E']:.1f} | {m['raw_E']:.0f} | {m['E'] / m['raw_E']:.1%} |")
    print(f"| {args.certs:,} certificates | {m['F']:.1f} | {m['raw_F']:.0f} | "
          f"{m['F'] / m['raw_F']:.1%} |")
    verdict = "within" if abs(out["diff_median"]) <= 0.10 else "NOT within"
    print(f"\nF/E difference (median of per-round differences): {out['diff_median']:+.1%} "
          f"({verdict} 10 %); each side divided by its raw rate of the round: "
          f"{out['diff_raw_norm_median']:+.1%}")
    return out


def slope_per_10k(xs: list[int], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 10_000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def memory(args) -> dict:
    from ca.clock import SystemClock
    from hsm.store import HsmKeyStore
    tmp = Path(tempfile.mkdtemp(prefix="govca-scale-mem-"))
    out: dict = {"backend": args.backend, "total": args.total, "every": args.every,
                 "batch": args.batch, "load_start": os.getloadavg()}
    try:
        make_token(tmp)
        keys = HsmKeyStore(hsm_config(tmp))
        clock = SystemClock()
        url = fresh_database(args.backend, tmp, f"{args.db_prefix}_mem", args.pg)
        db, ca, subs = prepare(url, keys, clock, "M")
        iss = issuance_service(db, keys, clock)
        key = keys.load(bytes.fromhex(ca.key_id))
        out["raw_start"] = raw_rate(key, args.raw_seconds, 1)
        batch_run(iss, subs, make_csrs(args.batch), args.batch)  # warm
        gc.collect()
        out["rss_before"] = rss_mib()
        samples: list[tuple[int, float, float]] = []  # (certs issued, RSS MiB, rate of chunk)
        n, t_issue = 0, 0.0
        print(f"memory run: {args.total:,} certificates, issue_batch({args.batch}), RSS every "
              f"{args.every:,}; RSS after warm-up {out['rss_before']:.1f} MiB, raw 1t "
              f"{out['raw_start']:.0f} sig/s, load {out['load_start']}", flush=True)
        t_start = time.perf_counter()
        out["stopped_by_time_limit"] = False
        while n < args.total:
            if args.max_seconds and time.perf_counter() - t_start > args.max_seconds:
                out["stopped_by_time_limit"] = True
                print(f"stopping at {n:,} of {args.total:,}: --max-seconds {args.max_seconds:.0f} "
                      f"reached", flush=True)
                break
            csrs = make_csrs(min(args.every, args.total - n))
            res = batch_run(iss, subs, csrs, args.batch)
            del csrs
            if res["errors"]:
                raise RuntimeError(f"{res['errors']} errors: {res['first_error']}")
            n += res["n"]
            t_issue += res["wall_s"]
            samples.append((n, rss_mib(), res["rate"]))
            print(f"{n:>8,} certs  RSS {samples[-1][1]:8.1f} MiB  chunk {res['rate']:6.1f} "
                  f"certs/s  load {os.getloadavg()[0]:.2f}", flush=True)
        out["raw_end"] = raw_rate(key, args.raw_seconds, 1)
        out["samples"] = samples
        out["rate"] = n / t_issue
        xs, ys = [s[0] for s in samples[1:]], [s[1] for s in samples[1:]]
        out["slope_mib_per_10k"] = slope_per_10k(xs, ys)
        out["first_last_mib"] = samples[-1][1] - samples[0][1]
        out["load_end"] = os.getloadavg()
        db.engine.dispose()
        keys.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw = statistics.fmean([out["raw_start"], out["raw_end"]])
    limit = " (time limit)" if out["stopped_by_time_limit"] else ""
    print(f"\n## memory run ({args.backend}): {n:,} certificates{limit}, {out['rate']:.1f} certs/s "
          f"({out['rate'] / raw:.1%} of raw 1t {raw:.0f} sig/s), load "
          f"{tuple(round(x, 2) for x in out['load_start'])} -> "
          f"{tuple(round(x, 2) for x in out['load_end'])}\n")
    print("| certificates | RSS MiB | chunk certs/s |\n|---|---|---|")
    for c, r, rate in samples:
        print(f"| {c:,} | {r:.1f} | {rate:.1f} |")
    print(f"\nRSS first -> last sample: {out['first_last_mib']:+.1f} MiB; least-squares slope "
          f"(first sample excluded): {out['slope_mib_per_10k']:+.2f} MiB per 10,000 "
          f"certificates")
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["throughput", "memory"])
    ap.add_argument("--quick", action="store_true", help="CI-sized run")
    ap.add_argument("--pg", help="PostgreSQL server URL (no database): use PostgreSQL")
    ap.add_argument("--certs", type=int, help="certificates in F (default 1,000,000; quick 20,000)")
    ap.add_argument("--count", type=int, help="certificates per measurement (default 1000)")
    ap.add_argument("--rounds", type=int, help="rounds E,F (default 3; quick 1)")
    ap.add_argument("--batch", type=int, default=50, help="requests per issue_batch call")
    ap.add_argument("--total", type=int, help="memory run size (default 100,000; quick 10,000)")
    ap.add_argument("--max-seconds", type=float, help="memory run: stop (and report what "
                    "was measured) after this long")
    ap.add_argument("--every", type=int, help="RSS sample interval (default 5,000; quick 1,000)")
    ap.add_argument("--db-prefix", default="scale", help="PostgreSQL databases are "
                    "govca_h_PREFIX_e, _f, _mem (dropped and created)")
    ap.add_argument("--profile", action="store_true", help="SQL time per statement + plans")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--keep", action="store_true", help="throughput, SQLite: keep the token and "
                    "the two databases (for --reuse)")
    ap.add_argument("--sqlite-cache-mib", type=int, default=0, help="experiment: PRAGMA "
                    "cache_size of every SQLite connection (with --reuse; default: SQLite's 2 MiB)")
    ap.add_argument("--reuse", help="throughput, SQLite: a directory kept by --keep (no fill)")
    ap.add_argument("--json", help="write the result here too")
    args = ap.parse_args(argv)
    args.backend = "postgresql" if args.pg else "sqlite"
    q = args.quick
    args.certs = args.certs if args.certs is not None else (20_000 if q else 1_000_000)
    args.count = args.count or (200 if q else 1000)
    args.rounds = args.rounds or (1 if q else 3)
    args.total = args.total or (10_000 if q else 100_000)
    args.every = args.every or (1_000 if q else 5_000)
    args.raw_seconds = 1.0 if q else 2.0
    return args


def main(argv=None) -> dict:
    global SQLITE_CACHE_MIB
    args = parse_args(argv)
    SQLITE_CACHE_MIB = args.sqlite_cache_mib
    res = throughput(args) if args.what == "throughput" else memory(args)
    res["at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return res


if __name__ == "__main__":
    main()
