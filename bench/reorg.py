"""Reorganisation throughput (issue 8), for bench/all.py: the real 2025 merger plan (63 -> 34
provinces, the built-in CSV) run by the executor on a throw-away instance, beside the raw
PKCS#11 rate of the same CA key measured in the same run.

    .venv/bin/python -m bench.reorg --quick            # ~1 minute
    .venv/bin/python -m bench.reorg --persons 10000 --url postgresql+psycopg://…/db

`run()` loads SoftHSM with the bench's own token: call it in a process that has not used
another token yet (bench/all.py does; tests run `python -m bench.reorg` in a subprocess).

`run(quick)` builds a throw-away instance: its own SoftHSM token, a database (SQLite file by
default, or a PostgreSQL URL, emptied first), the demo PKI (key ceremony: root RSA-3072 +
issuing RSA-2048) and organisations, and the 63 old provinces with N staff (quick 500, full
10,000) and two seals each, each with one valid certificate (ca.reorg.sampleworld). The plan is
created from the built-in CSV, approved by a second person, and run by successive `Runner`s
(each takes the lease the previous one released, like the scheduler's worker slices): the
structure phase and a first item; a slice with no throttle (share 1, a token bucket far above
the HSM); a slice at the default share of the raw 1-thread rate measured just before it (what
the scheduler's worker does). Quick: slices of 12 s. Full: the unthrottled slice takes half of
the work items, the throttled one the rest, and the whole plan's wall time is a row. Rows:
re-issued certificates/s with its ratio to the raw 1- and 2-thread signing rates of the same
key measured right before the slice, people/s, work items/s, wall times.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.ocsp_crl import raw_rate

PIN = "11223344"
UNTHROTTLED_RATE = 1e9  # a token bucket that never waits


def make_token(tmp: Path):
    """A fresh SoftHSM token 'reorg-bench' in tmp (SOFTHSM2_CONF points at it)."""
    from hsm.config import HsmConfig, find_softhsm
    (tmp / "tokens").mkdir(exist_ok=True)
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "reorg-bench", "--pin",
                    PIN, "--so-pin", "55667788"], check=True, capture_output=True)
    (tmp / "pin").write_text(PIN)
    return HsmConfig(module=find_softhsm(), token_label="reorg-bench", pin_file=tmp / "pin",
                     softhsm_conf=conf, pool_size=4)


def _empty_database(url: str) -> None:
    from ca.store import schema  # noqa: F401  (every table in the metadata)
    from ca.store.base import Base
    from ca.store.database import make_engine
    engine = make_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    engine.dispose()


def build_instance(tmp: Path, url: str, keys, hsm, persons: int):
    """The demo PKI and organisations, then the 63 old provinces with `persons` staff."""
    from ca.clock import SystemClock
    from ca.profiles import builtin_profiles
    from ca.reorg import sampleworld
    from ca.store.database import Database, make_engine
    from ra_portal.demo import init_demo
    from ra_portal.settings import Settings
    from ra_portal.wiring import Services
    _empty_database(url)
    settings = Settings(instance=tmp, database_url=url, base_url="http://127.0.0.1:8080",
                        secret_key_file=tmp / "secret", listen="127.0.0.1:8080",
                        profiles_file=tmp / "profiles.json", hsm=hsm)
    svc = Services(settings=settings, db=Database(make_engine(url)), clock=SystemClock(),
                   profiles=builtin_profiles(), _keys=keys)
    init_demo(svc, echo=lambda *a, **k: None)
    loaded = sampleworld.populate(svc.db, keys, svc.clock, svc.profiles, n_persons=persons)
    return svc, loaded


def make_plan(svc) -> int:
    """The 2025 plan from the built-in CSV, prepared by one person and approved by another."""
    from ca.ra.roles import Caller
    from ca.reorg import csvmap
    from ca.reorg.plans import approve_plan, create_plan
    with svc.db.transaction() as s:
        items, _skipped = csvmap.items_from_csv(s, csvmap.builtin_csv())
        plan_id = create_plan(s, Caller.system("bench"), name="Sáp nhập tỉnh 2025 (bench)",
                              items=items, clock=svc.clock, reason="bench").id
    with svc.db.transaction() as s:
        approve_plan(s, Caller.system("bench-approver"), plan_id, clock=svc.clock)
    return plan_id


def done_by_kind(svc, plan_id: int) -> dict[str, int]:
    from collections import Counter

    from sqlalchemy import select

    from ca.store.models import Subscriber
    from ca.store.models_reorg import ReorgWork
    with svc.db.transaction() as s:
        return dict(Counter(s.execute(select(Subscriber.kind).join(
            ReorgWork, ReorgWork.subscriber_id == Subscriber.id).where(
            ReorgWork.plan_id == plan_id, ReorgWork.state == "done")).scalars()))


def run(quick: bool = True, *, persons: int | None = None, url: str | None = None,
        slice_seconds: float | None = None, echo=print) -> list[dict]:
    """Rows for bench/all.py: {"case", "value", "unit", "ratio"?} (+ raw figures).

    One instance, one plan, run in slices by successive Runners (each takes the lease the
    previous one released, as the scheduler's worker does): the structure phase and a first
    item; a slice with no throttle; a slice at the default share of the raw rate measured just
    before. Quick: slices of `slice_seconds` (12 s). Full: the unthrottled slice takes half of
    the work items, the throttled one the rest, and the whole plan's wall time is a row."""
    from ca.reorg.dryrun import DEFAULT_SHARE
    from ca.reorg.executor import Runner
    from hsm.store import HsmKeyStore
    from sqlalchemy import select

    from ca.store.models import CertificateAuthority
    persons = persons or (500 if quick else 10_000)
    slice_seconds = slice_seconds or (12.0 if quick else None)
    raw_s = 1.0 if quick else 3.0
    tmp = Path(tempfile.mkdtemp(prefix="govca-reorg-bench-"))
    old_conf = os.environ.get("SOFTHSM2_CONF")
    rows: list[dict] = []
    try:
        hsm = make_token(tmp)
        keys = HsmKeyStore(hsm)
        try:
            db_url = url or f"sqlite:///{tmp / 'reorg.sqlite3'}"
            t0 = time.perf_counter()
            svc, _loaded = build_instance(tmp, db_url, keys, hsm, persons)
            setup_s = time.perf_counter() - t0
            with svc.db.transaction() as s:
                ca = s.execute(select(CertificateAuthority).where(
                    CertificateAuthority.name == "issuing")).scalar_one()
                key = keys.load(bytes.fromhex(ca.key_id), ca.key_label)
            plan_id = make_plan(svc)
            issuance = svc.issuance()

            def runner(rate, share):
                return Runner(svc.db, issuance, svc.clock, hsm_rate=rate, share=share,
                              batch=50, actor="system:bench")
            first = runner(UNTHROTTLED_RATE, 1.0).run(plan_id, max_items=1)
            total = first.total
            rows.append({"case": f"2025 plan 63→34, {persons:,} staff: structure phase + "
                                 f"first item ({total:,} work items)",
                         "value": first.seconds, "unit": "s", "setup_s": setup_s})
            echo(f"reorg bench: {persons} staff, {total} work items; setup {setup_s:.1f} s, "
                 f"structure phase + first item {first.seconds:.1f} s")
            whole = first.seconds
            half = max(1, (total - 1) // 2)
            for label, share in (("no throttle", None),
                                 (f"throttle at {DEFAULT_SHARE:.0%} of raw 1t", DEFAULT_SHARE)):
                raw1, raw2 = raw_rate(key, raw_s, 1), raw_rate(key, raw_s, 2)
                load = os.getloadavg()[0]
                before = done_by_kind(svc, plan_id)
                r = runner(UNTHROTTLED_RATE, 1.0) if share is None else runner(raw1, share)
                # The unthrottled slice takes at most half the items, so the throttled one
                # always has work left (a fast run would otherwise finish the plan in slice 1).
                res = r.run(plan_id, max_seconds=slice_seconds or None,
                            max_items=half if share is None else None)
                whole += res.seconds
                after = done_by_kind(svc, plan_id)
                people = after.get("person", 0) - before.get("person", 0)
                certs_s = res.signatures / res.seconds
                extra = {"raw_1t": raw1, "raw_2t": raw2, "load": load, "persons": persons,
                         "items": res.processed, "signatures": res.signatures,
                         "seconds": res.seconds, "state": res.state, "failed": res.failed}
                what = f"2025 plan, {label}"
                rows += [
                    {"case": f"raw PKCS#11 sign of the issuing key, 1 thread (before: {label})",
                     "value": raw1, "unit": "sig/s", "ratio": f"2 threads: {raw2:,.0f} sig/s",
                     **extra},
                    {"case": f"{what}: re-issued certificates/s", "value": certs_s,
                     "unit": "certs/s", "ratio": f"{certs_s / raw1:.1%} of raw 1t, "
                                                 f"{certs_s / raw2:.1%} of raw 2t",
                     "ratio_1t": certs_s / raw1, "ratio_2t": certs_s / raw2, **extra},
                    {"case": f"{what}: people/s", "value": people / res.seconds,
                     "unit": "people/s", **extra},
                    {"case": f"{what}: work items (people + seals)/s",
                     "value": res.processed / res.seconds, "unit": "items/s", **extra},
                ]
                echo(f"  {label}: {res.processed} items ({people} people, {res.signatures} "
                     f"signatures) in {res.seconds:.1f} s = {certs_s:.1f} certs/s "
                     f"({certs_s / raw1:.1%} of raw 1t {raw1:.0f}/s, {certs_s / raw2:.1%} of "
                     f"raw 2t {raw2:.0f}/s); load {load:.2f}; plan {res.state}")
                if res.failed:
                    raise RuntimeError(f"work items failed: {res}")
            if res.state == "done":
                rows.append({"case": f"2025 plan 63→34, {persons:,} staff: whole plan wall "
                                     f"time ({total:,} items)", "value": whole, "unit": "s"})
            svc.db.engine.dispose()
        finally:
            keys.close()
    finally:
        if old_conf is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = old_conf
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--persons", type=int,
                    help="staff in the old provinces (quick 500, full 10,000)")
    ap.add_argument("--url", help="database URL (default: a SQLite file); it is emptied")
    ap.add_argument("--json", help="write the rows here too")
    ap.add_argument("--slice", type=float, help="seconds per measured slice (quick: 12; "
                    "full: the whole plan)")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    rows = run(args.quick, persons=args.persons, url=args.url, slice_seconds=args.slice)
    if args.json:
        import json
        Path(args.json).write_text(json.dumps({"rows": rows, "load_start": load0,
                                               "load_end": os.getloadavg()}, indent=2))
    print(f"\nload average at start {tuple(round(x, 2) for x in load0)}, at end "
          f"{tuple(round(x, 2) for x in os.getloadavg())}, at "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}Z\n")
    print("| case | value | unit | ratio |\n|---|---|---|---|")
    for r in rows:
        v = r["value"]
        print(f"| {r['case']} | {v:,.1f} | {r['unit']} | {r.get('ratio', '')} |")


if __name__ == "__main__":
    main()
