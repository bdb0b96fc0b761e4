"""bench/issuance.py with a tiny count (seconds, not a timed test): every row of the table is
there, no certificate failed, and the figures are real numbers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not Path("/usr/lib/softhsm/libsofthsm2.so").exists()
                    and not list(Path("/usr/lib").glob("*/softhsm/libsofthsm2.so")),
                    reason="SoftHSM not installed")
def test_issuance_bench_prints_every_row(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "bench/issuance.py", "--quick", "--keys", "p256", "--count", "12",
         "--api-count", "4", "--clients", "2", "--batch", "4", "--api-batch", "4",
         "--api-batch-count", "8", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    cases = [r["case"] for r in rows]
    expected = ["raw PKCS#11 sign, 1 thread(s)", "raw PKCS#11 sign, 2 thread(s)",
                "raw PKCS#11 sign, 2 processes", "core IssuanceService.issue, 1 thread(s)",
                "core IssuanceService.issue, 2 thread(s)",
                "core issue_batch (batches of 4), 1 thread", "core issue, 2 processes",
                "core issue_batch (4), 2 processes", "core: peak RSS of the bench process",
                "REST API create + approve (gunicorn), 1 client(s)",
                "REST API create + approve (gunicorn), 2 client(s)",
                "REST API batch create+approve (batches of 4), 1 client(s)",
                "REST API batch, 1 client(s): server CPU per certificate (HSM signature "
                "included)",
                "REST API batch, 1 client(s): client CPU per certificate",
                "REST API batch create+approve (batches of 4), 2 client(s)",
                "REST API batch, 2 client(s): server CPU per certificate (HSM signature "
                "included)",
                "REST API batch, 2 client(s): client CPU per certificate"]
    assert cases == expected
    for r in rows:
        assert r["key"] == "p256", r
        if r["unit"] == "µs":  # CPU per certificate: /proc counts in 10-ms ticks, 8 is few
            assert 0 <= r["value"] < 1e6, r
            continue
        assert r["value"] > 0, r
        assert not r.get("errors"), r
        if r["unit"] == "certs/s":
            assert 0 < r["ratio"] < 1 and r["ref"].startswith("raw 2 processes")
        if r["case"].startswith("REST API batch create"):  # raw rate around each slice
            assert r["ref"] == "raw 2 processes, around each of 4 slices", r
            assert len(r["raw_refs"]) == 5 and all(x > 0 for x in r["raw_refs"]), r
            assert len(r["slice_ratios"]) == 4, r
    table = proc.stdout[proc.stdout.index("| key | case |"):]
    assert all(f"| p256 | {c} |" in table for c in expected)
