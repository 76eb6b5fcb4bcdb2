"""`slidegrid demo`, the README's main job, end to end on a tiny archive: every stage leaves its outputs."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from slidegrid.cli import main
from slidegrid.io.grids import MANIFEST_NAME
from slidegrid.io.manifest import read_manifest

# Ray's own output that must stay off the terminal (README: demo output): forwarded worker/actor lines, Ray
# Train's per-report INFO, Ray Data's progress log, the driver's native core-worker lines, the autoscaler.
RAY_CHATTER = ("RayTrainWorker", "TrainController", "Reporting training result", "logging_progress",
               "streaming_executor", "core_worker.cc", "(autoscaler)")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`slidegrid demo` as a user runs it: the console script in its own process (its own Ray), from a folder laid
    out like the repository root (./slidegrid-demo, jobs/configs), so the README's relative paths work there."""
    root = tmp_path_factory.mktemp("repo")
    (root / "jobs").symlink_to(Path(__file__).resolve().parents[2] / "jobs")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "slidegrid.cli", "demo", "--slides", "8", "--size", "1024",
                           "--workers", "1", "--epochs", "3"], cwd=root, capture_output=True, text=True, env=env,
                          timeout=540)
    return root, proc


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_runs_every_stage_and_reports_where_things_are(demo_run):
    """What reaches the terminal is what a user sees: the stages, one line per epoch, the report; Ray's logs in
    <out>/logs/ray.log."""
    root, proc = demo_run
    out = root / "slidegrid-demo"
    printed, terminal = proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0, terminal[-3000:]
    for stage in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert stage in printed
    assert "test_accuracy" in printed and "95% CI" in printed and f"mlflow ui --backend-store-uri sqlite:///{out}/mlflow.db" in printed
    # One line per epoch; the demo reports to Ray Train every 10th epoch and at the last, so only epoch 3 here.
    epochs = re.findall(r"^epoch (\d)/3  train_loss \S+  val_loss .*$", printed, re.M)
    assert epochs == ["1", "2", "3"], printed
    assert [ln.endswith("(checkpoint)") for ln in printed.splitlines() if ln.startswith("epoch ")] == [False, False,
                                                                                                     True]
    assert not [c for c in RAY_CHATTER if c in terminal], terminal
    log = (out / "logs" / "ray.log").read_text()
    assert f"Ray's logs: {out}/logs/ray.log" in proc.stderr
    assert log.count("Reporting training result") == 1  # one report: 1 worker, the last epoch
    assert "streaming_executor" in log and "(RayTrainWorker pid=" in log and "[slidegrid] epoch 3/3" in log
    assert len(list((out / "tissue").glob("*_tissue.png"))) == 8
    manifest = read_manifest(str(out / "grids" / MANIFEST_NAME))
    assert len(manifest) == 8 and {m["status"] for m in manifest.values()} <= {"ok", "skipped_no_tissue"}
    mlflow.set_tracking_uri(f"sqlite:///{out}/mlflow.db")
    versions = mlflow.MlflowClient().search_model_versions("name='slidegrid-attention-classification'")
    assert len(versions) == 1  # the trained model is registered where the report says


def _readme_tune_command() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(r"^\.venv/bin/slidegrid (tune .*?)\n(?!\s)", text.replace("\\\n", " "), re.M | re.S)
    assert found, "the README lost its tune example"
    return shlex.split(found.group(1))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_tune_example_runs_as_written_on_the_demo_grids(demo_run, ray_local, monkeypatch):
    """The README's paths untouched, run from the demo's folder: Ray's workers run elsewhere, so relative paths
    must not reach them. Fewer trials and epochs than written (the sweep's size is not what is tested here)."""
    root, proc = demo_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    monkeypatch.chdir(root)
    args = _readme_tune_command()
    for flag in ("--trials", "--epochs"):
        args[args.index(flag) + 1] = "2"
    assert main(args) == 0
    import yaml

    best = yaml.safe_load((root / "slidegrid-demo" / "sweep" / "best.yaml").read_text())
    assert best["trials"] == 2 and best["best_params"]
    assert best["best_checkpoint"].startswith(str(root / "slidegrid-demo" / "sweep"))
