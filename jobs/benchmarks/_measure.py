"""Benchmark plumbing: run one measurement in a fresh process and sample the memory it holds (the machine's used
memory above its level before the run: driver, raylet, Ray workers and object store, DataLoader workers), and
the CPU time of a process tree."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass


def used_memory() -> int:
    """Bytes of the machine's memory in use: MemTotal - MemAvailable of /proc/meminfo (page cache that can be
    dropped is not in use; shared memory, a Ray object store included, is)."""
    with open("/proc/meminfo") as f:
        info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f}
    return info["MemTotal"] - info["MemAvailable"]


@dataclass
class Measured:
    """One subprocess measurement: its `RESULT {json}` line (None if absent), exit code, peak memory held."""

    result: dict | None
    returncode: int | None  # None when it ran past the timeout and was killed
    peak_bytes: int
    output: str


def run_measured(cmd: list[str], timeout: float | None = None, interval: float = 0.5) -> Measured:
    """Run `cmd` (which prints `RESULT {json}`) and record the peak of the machine's used memory above its level
    before the start, sampled every `interval` seconds: everything the run holds (driver, raylet, Ray workers,
    object store, DataLoader workers), on an idle machine.

    Not the PSS of the process tree (what these benchmarks sampled before 2026-12-02): reading PSS walks every
    process's page tables under its mmap lock, ~50 ms for a local Ray's 20 processes, and stalled the timed
    pipeline's allocations (a resnet18 encode run 98 s unsampled, 117 s sampled every 1-2 s) while a one-process
    baseline paid nothing. /proc/meminfo costs microseconds and locks nothing."""
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    base = used_memory()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], used_memory() - base)
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


class TreeCPU:
    """CPU seconds (user + system) spent by this process and its descendants between `with` entry and exit.

    Each process's cumulative CPU time is sampled every `interval` seconds in a thread, so a Ray worker that
    exits inside the window still counts (up to its last sample). Unlike wall time it barely moves when other
    jobs share the machine: the cost of a pipeline per tile, comparable with a bare loop's `process_time`.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.seconds = 0.0
        self.series: list[tuple[float, float]] = []  # (time.time(), CPU seconds so far) at every sample

    def _sample(self) -> dict[int, float]:
        import psutil

        out = {}
        root = psutil.Process(os.getpid())
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
        return out

    def _total(self) -> float:
        return sum(v - self._start.get(pid, 0.0) for pid, v in self._last.items())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._last.update(self._sample())
            self.series.append((time.time(), self._total()))

    def at(self, t: float) -> float:
        """CPU seconds spent from entry to time `t` (time.time()), interpolated between samples."""
        prev = (self.series[0][0], 0.0) if self.series else (t, 0.0)
        for cur in self.series:
            if cur[0] >= t:
                span = cur[0] - prev[0]
                return prev[1] + (cur[1] - prev[1]) * ((t - prev[0]) / span if span > 0 else 1.0)
            prev = cur
        return prev[1]

    def __enter__(self) -> TreeCPU:
        self._start = self._sample()
        self._last = dict(self._start)
        self.series = [(time.time(), 0.0)]
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(self._sample())
        self.seconds = self._total()
        self.series.append((time.time(), self.seconds))
