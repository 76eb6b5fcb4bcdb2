"""Smoke test of jobs/benchmarks/benchmark_scale.py part (a): commit 1a76780's driver and today's Coordinator, each in its
own process, land in one table (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_scale_quick_driver_cost_table():
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", "1a76780^{commit}"], capture_output=True).returncode:
        pytest.skip("no git history with commit 1a76780 (the 'before' driver)")
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "benchmarks" / "benchmark_scale.py"), "--quick", "--parts", "a"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| (a)")]
    for kind in ("before", "after"):
        for c in (512, 1536):
            assert any(f"driver cost — {kind}" in r and f"C = {c} " in r and "CPU s / 100k tiles" in r
                       and "ceiling" in r for r in rows), proc.stdout
    assert sum("after ceiling / before ceiling" in r for r in rows) == 2
    assert all("synthetic batches" in r and "no encoder" in r for r in rows if "driver cost — ratio" not in r)
