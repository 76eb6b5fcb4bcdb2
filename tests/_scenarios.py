"""Scenarios that need a Ray of their own (a `ray.cluster_utils.Cluster`), run as scripts in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def run_scenario(name: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run tests/scenarios/NAME.py with `args` (no RAY_ADDRESS, token auth off) and return the JSON it prints
    on its `RESULT ` line; fails with the tail of its output when there is none."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(SCENARIOS / f"{name}.py"), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[len("RESULT "):])
