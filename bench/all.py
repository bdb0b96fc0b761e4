"""Every benchmark in one run, one combined table: issuance (bench/issuance.py), OCSP and CRLs
(bench/ocsp_crl.py), the reorganisation throughput (bench.reorg), with --scale the empty vs
filled database and memory runs (bench/scale.py), and, with --plans-url, the query timings on a
large database (bench/plans.py).

    .venv/bin/python bench/all.py --quick        # make bench-quick
    .venv/bin/python bench/all.py                # make bench
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_script(args: list[str], json_path: Path) -> dict:
    cmd = [sys.executable] + args + ["--json", str(json_path)]
    print(">>", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads(json_path.read_text())


def reorg_rows(quick: bool) -> tuple[list[dict], str | None]:
    """The reorganisation row: computed when `bench.reorg` has `run(quick=...)` returning
    rows ({"case", "value", "unit"}); otherwise omitted with a note."""
    try:
        mod = importlib.import_module("bench.reorg")
    except ImportError:
        return [], "reorganisation throughput: omitted (no bench.reorg entry point yet)"
    run = getattr(mod, "run", None)
    if run is None:
        return [], "reorganisation throughput: omitted (bench.reorg has no run())"
    return list(run(quick=quick)), None


def fmt(v) -> str:
    if not isinstance(v, (int, float)):
        return str(v)
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of: issuance,ocsp,reorg")
    ap.add_argument("--issuance-args", default="", help="extra arguments for issuance.py")
    ap.add_argument("--ocsp-args", default="", help="extra arguments for ocsp_crl.py")
    ap.add_argument("--plans-url", help="a database filled by bench/datagen.py: add query timings")
    ap.add_argument("--scale", action="store_true", help="add bench/scale.py: issuance on an "
                    "empty vs a filled database (quick: 20,000 certificates, full: 1,000,000) "
                    "and the memory run (quick: 10,000, full: 100,000); long, off by default")
    ap.add_argument("--scale-args", default="", help="extra arguments for scale.py "
                    "(e.g. \"--pg postgresql+psycopg://postgres@127.0.0.1:5432\")")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    quick = ["--quick"] if args.quick else []
    tmp = Path(tempfile.mkdtemp(prefix="govca-bench-all-"))
    table: list[tuple[str, str, object, str, str]] = []  # bench, case, value, unit, ratio
    notes: list[str] = []
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    if "issuance" not in skip:
        res = run_script(["bench/issuance.py"] + quick + args.issuance_args.split(),
                         tmp / "issuance.json")
        for r in res["rows"]:
            ratio = f"{r['ratio']:.1%} of {r['ref']}" if r.get("ratio") is not None else ""
            table.append(("issuance", f"{r['key']}: {r['case']}", r["value"], r["unit"], ratio))
    if "ocsp" not in skip:
        res = run_script(["bench/ocsp_crl.py"] + quick + args.ocsp_args.split(),
                         tmp / "ocsp.json")
        for r in res["rows"]:
            ratio = next((f"{r[k]:.1%} of raw" for k in ("ratio_to_raw", "ratio_to_raw_1t")
                          if r.get(k) is not None), "")
            table.append(("ocsp/crl", f"{r['case']} ({r['metric']})", r["value"], r["unit"],
                          ratio))
    if "reorg" not in skip:
        rows, note = reorg_rows(args.quick)
        for r in rows:
            table.append(("reorg", r["case"], r["value"], r["unit"], r.get("ratio", "")))
        loads = [r["load"] for r in rows if r.get("load") is not None]
        if loads:
            notes.append(f"reorganisation rows: 1-minute load average {min(loads):.2f}–"
                         f"{max(loads):.2f} before the measured slices")
        if note:
            notes.append(note)
    if args.scale:
        extra = args.scale_args.split()
        res = run_script(["bench/scale.py", "throughput", "--no-progress"] + quick + extra,
                         tmp / "scale-tp.json")
        m = res["median"]
        for side, name in (("E", "empty database"),
                           ("F", f"{res['certs']:,}-certificate database")):
            table.append(("scale", f"issue_batch({res['batch']}) on the {name} ({res['backend']})",
                          m[side], "certs/s", f"{m[side] / m['raw_' + side]:.1%} of raw 1t"))
        table.append(("scale", "filled vs empty database (median of rounds)",
                      res["diff_median"] * 100, "%", "target: within ±10 %"))
        res = run_script(["bench/scale.py", "memory"] + quick + extra, tmp / "scale-mem.json")
        table.append(("scale", f"memory run: {res['samples'][-1][0]:,} certificates, RSS slope",
                      res["slope_mib_per_10k"], "MiB per 10k certs",
                      f"RSS {res['samples'][0][1]:.0f} → {res['samples'][-1][1]:.0f} MiB"))
    if args.plans_url:
        from bench import plans
        for name, t in plans.main(["--url", args.plans_url, "--no-plans"]):
            table.append(("1M queries", name, t * 1000, "ms", ""))
    load_end = os.getloadavg()
    print(f"\n## GovCA benchmarks ({'quick' if args.quick else 'full'}), "
          f"{time.perf_counter() - t0:.0f} s, {os.cpu_count()} CPUs, load average at start "
          f"{tuple(round(x, 2) for x in load_start)}, at end "
          f"{tuple(round(x, 2) for x in load_end)}\n")
    print("| bench | case | value | unit | ratio |\n|---|---|---|---|---|")
    for bench, case, value, unit, ratio in table:
        print(f"| {bench} | {case} | {fmt(value)} | {unit} | {ratio} |")
    for n in notes:
        print(f"\n_{n}_")
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
