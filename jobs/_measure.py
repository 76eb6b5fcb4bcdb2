"""Benchmark plumbing: run one measurement in a fresh process and sample the memory of its whole process tree.

A local Ray's raylet and workers (and a DataLoader's workers) are descendants of the measured process, so the
summed PSS of the tree is the memory the measurement really costs, shared pages counted once.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass


def tree_pss(pid: int) -> int:
    """Summed PSS (bytes) of a process and all its descendants."""
    import psutil

    total = 0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += p.memory_full_info().pss
    except psutil.NoSuchProcess:
        pass
    return total


@dataclass
class Measured:
    """One subprocess measurement: its `RESULT {json}` line (None if absent), exit code, peak tree PSS."""

    result: dict | None
    returncode: int | None  # None when it ran past the timeout and was killed
    peak_bytes: int
    output: str


def run_measured(cmd: list[str], timeout: float | None = None, interval: float = 0.5) -> Measured:
    """Run `cmd` (which prints `RESULT {json}`), sampling its process tree's PSS every `interval` seconds."""
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss(proc.pid))
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        # The whole group: a local Ray's raylet and workers must not outlive the measurement.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        code = None
    sampler.join()
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    return Measured(json.loads(line[7:]) if line else None, code, peak[0], out)
