"""Smoke test of jobs/benchmarks/benchmark_encode.py's read rows (`--quick --read-only`): the physical limit, the
read stage and the tiffslide baseline each measured on the same grid, in one table (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_encode_quick_read_rows():
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "benchmarks" / "benchmark_encode.py"), "--quick",
                           "--read-only"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [ln.split("|") for ln in proc.stdout.splitlines() if ln.startswith("| (a")]
    tiles = {r[1].strip()[:5]: int(r[4]) for r in rows if r[2].strip() == "-"}  # pipeline table: encoder "-"
    assert len(tiles) == 3 and len(set(tiles.values())) == 1 and min(tiles.values()) > 0, proc.stdout
