"""Faults during encoding: a worker node dies mid-run; the driver is killed and the run is resumed."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from _cases import synthetic_archive
from _scenarios import run_scenario
from slidegrid.encode import EncodeConfig, run_encode
from slidegrid.geometry.tiling import GridSpec
from slidegrid.io.grids import MANIFEST_NAME, grid_uri, read_grid
from slidegrid.io.manifest import read_manifest
from slidegrid.stream.staging import STAGING

REPO = Path(__file__).resolve().parents[2]
TILE = 64


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return synthetic_archive(tmp_path_factory.mktemp("faults"), "f", 6, 2048, seed=40)


@pytest.fixture(scope="module")
def clean(archive, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("clean")
    run_encode(EncodeConfig(input=str(archive), out=str(out), dtype="float32", mlflow=False, progress=False,
                            grid=GridSpec(tile_size=TILE)))
    return out


def _same_grids(a: Path, b: Path, ids: list[str]) -> None:
    for sid in ids:
        ga, gb = read_grid(grid_uri(str(a), sid)), read_grid(grid_uri(str(b), sid))
        order_a = np.lexsort((ga.col, ga.row))
        order_b = np.lexsort((gb.col, gb.row))
        np.testing.assert_array_equal(ga.row[order_a], gb.row[order_b])
        np.testing.assert_array_equal(ga.embedding[order_a], gb.embedding[order_b])


def _kill_when_committing(cmd: list[str], env: dict, out: Path, staged: str) -> set[str]:
    """Start the encode job, kill it once a grid and a staged part are seen together; the grids under final names."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while (time.time() < deadline and proc.poll() is None
           and not (glob.glob(str(out / "f*.parquet")) and glob.glob(staged))):
        time.sleep(0.02)
    # The driver and its local Ray die together, like a lost laptop: its process group and every process it
    # started (Ray starts some of its own in other groups; left alive, they would go on writing for a while).
    with contextlib.suppress(psutil.NoSuchProcess):
        family = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGKILL)
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(family, timeout=30)
    proc.wait()
    return {os.path.basename(p) for p in glob.glob(str(out / "f*.parquet"))}


@pytest.mark.slow
def test_worker_node_dies_mid_run(archive, clean, tmp_path):
    out = tmp_path / "faulty"
    report = run_scenario("node_failure", archive, out, TILE, timeout=600)
    assert report["removed_mid_run"], "the node was removed after the job ended: the test proved nothing"
    assert sorted(r["status"] for r in report["results"]) == ["ok"] * 6, [r["error"] for r in report["results"]]
    ids = [f"f{i}" for i in range(6)]
    assert sorted(os.path.basename(p) for p in glob.glob(str(out / "*.parquet"))) == sorted(
        [f"{i}.parquet" for i in ids] + [MANIFEST_NAME])
    _same_grids(out, clean, ids)


@pytest.mark.slow
def test_killed_driver_then_rerun_finishes_each_slide_once(archive, clean, tmp_path):
    out = tmp_path / "resumed"
    cmd = [sys.executable, str(REPO / "jobs" / "encode.py"), str(archive), "--out", str(out), "--tile-size",
           str(TILE), "--dtype", "float32", "--no-mlflow", "--no-progress"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    staged = str(out / STAGING / "*" / "*.npz")
    # The kill must land while a grid is committed and parts are still staged. On a fast machine the run can end,
    # or commit its last grid in the moment between seeing that state and the kill, so the attempt (start, wait,
    # kill) is made again, at most three times.
    first: set[str] = set()
    for _ in range(3):
        shutil.rmtree(out, ignore_errors=True)
        first = _kill_when_committing(cmd, env, out, staged)
        if 0 < len(first) < 6 and glob.glob(staged):
            break
    assert 0 < len(first) < 6, f"kill did not land mid-run in three attempts: {first}"
    assert glob.glob(staged), "the killed run left no staged parts: the test proved nothing about their clean-up"
    for p in glob.glob(str(out / "f*.parquet")):  # whatever is under a final name is a whole grid
        read_grid(p)
    results = {r.slide_id: r for r in run_encode(EncodeConfig(input=str(archive), out=str(out),
                                                              dtype="float32", mlflow=False, progress=False,
                                                              grid=GridSpec(tile_size=TILE))).results}
    assert all(r.status == "ok" for r in results.values())
    assert {f"{s}.parquet" for s, r in results.items() if r.reused} == first
    assert not glob.glob(str(out / ".*.tmp")), "temporary files of the killed run were left behind"
    assert not os.path.exists(out / STAGING), "staged parts of the killed run were left behind"
    manifest = read_manifest(str(out / MANIFEST_NAME))
    assert sorted(manifest) == [f"f{i}" for i in range(6)]
    _same_grids(out, clean, list(manifest))
