"""Every benchmark in one run, one combined table: issuance (bench/issuance.py), OCSP and CRLs
(bench/ocsp_crl.py), the reorganisation throughput when `ca.reorg` offers a bench entry point,
and, with --plans-url, the query timings on a large database (bench/plans.py).

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
    """The reorganisation row: computed when `ca.reorg.bench` has `run(quick=...)` returning
    rows ({"case", "value", "unit"}); otherwise omitted with a note."""
    try:
        mod = importlib.import_module("ca.reorg.bench")
    except ImportError:
        return [], "reorganisation throughput: omitted (no ca.reorg.bench entry point yet)"
    run = getattr(mod, "run", None)
    if run is None:
        return [], "reorganisation throughput: omitted (ca.reorg.bench has no run())"
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
        if note:
            notes.append(note)
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
