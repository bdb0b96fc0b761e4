"""bench/scale.py and bench.reorg with tiny sizes (seconds, not timed tests): every figure is
there and is a real number, nothing failed. On the PostgreSQL backend bench/scale.py uses the
test server (its own throw-away databases)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import BACKEND, PG_URL

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not Path("/usr/lib/softhsm/libsofthsm2.so").exists()
    and not list(Path("/usr/lib").glob("*/softhsm/libsofthsm2.so")),
    reason="SoftHSM not installed")


def scale(*args: str, tmp_path: Path) -> dict:
    out = tmp_path / "out.json"
    extra: list[str] = []
    if BACKEND == "postgresql":
        server = PG_URL.rsplit("/", 1)[0]
        extra = ["--pg", server, "--db-prefix", f"smoke{os.getpid()}"]
    proc = subprocess.run([sys.executable, "bench/scale.py", *args, *extra, "--no-progress",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if BACKEND == "postgresql":
        from sqlalchemy import create_engine, text
        eng = create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            for suffix in ("e", "f", "mem"):
                c.execute(text(f"DROP DATABASE IF EXISTS govca_h_smoke{os.getpid()}_{suffix} "
                               f"WITH (FORCE)"))
        eng.dispose()
    return {"json": json.loads(out.read_text()), "stdout": proc.stdout}


def test_throughput_empty_vs_filled(tmp_path):
    r = scale("throughput", "--certs", "300", "--count", "20", "--batch", "10", "--rounds", "1",
              "--profile", tmp_path=tmp_path)
    res = r["json"]
    assert res["backend"] == BACKEND and res["certs"] == 300
    [rnd] = res["rounds"]
    assert rnd["E"] > 0 and rnd["F"] > 0 and rnd["raw_E"] > 0 and rnd["raw_F"] > 0
    assert rnd["diff"] == pytest.approx(rnd["F"] / rnd["E"] - 1)
    # the profile found the statements of the issuance cycle on both databases
    for side in ("E", "F"):
        sqls = " ".join(s["sql"] for s in res["profile"][side]["statements"])
        assert "certificate" in sqls and "audit" in sqls
    assert res["plans"] and all(p["plan"] for p in res["plans"])
    assert "| empty |" in r["stdout"] and "| 300 certificates |" in r["stdout"]


def test_memory_series(tmp_path):
    res = scale("memory", "--total", "40", "--every", "20", "--batch", "10",
                tmp_path=tmp_path)["json"]
    assert [s[0] for s in res["samples"]] == [20, 40]
    assert all(s[1] > 10 and s[2] > 0 for s in res["samples"])
    assert res["rate"] > 0 and res["raw_start"] > 0 and res["raw_end"] > 0
    assert isinstance(res["slope_mib_per_10k"], float)


def test_reorg_bench_rows(tmp_path):
    """bench.reorg: the 2025 plan runs on its own instance (SQLite; its own SoftHSM token, so
    in a fresh process), in the two measured slices, and every row bench/all.py prints is
    there."""
    out = tmp_path / "reorg.json"
    proc = subprocess.run([sys.executable, "-m", "bench.reorg", "--quick", "--persons", "12",
                           "--slice", "1", "--json", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    cases = [r["case"] for r in rows]
    assert cases[0].startswith("2025 plan 63→34, 12 staff: structure phase + first item")
    for label in ("no throttle", "throttle at 50% of raw 1t"):
        assert f"2025 plan, {label}: re-issued certificates/s" in cases
        assert f"2025 plan, {label}: people/s" in cases
        assert any(c.startswith(f"raw PKCS#11 sign of the issuing key, 1 thread (before: "
                                f"{label})") for c in cases)
    for r in rows:
        assert r["value"] >= 0 and r["unit"] and not r.get("failed"), r
    certs = [r for r in rows if r["unit"] == "certs/s"]
    assert all(0 < r["ratio_1t"] < 1 and "of raw 1t" in r["ratio"] for r in certs if r["value"])
    assert all(r["items"] > 0 for r in certs)  # a slice always makes progress
    assert "| 2025 plan, no throttle: re-issued certificates/s |" in proc.stdout
