"""Ray Train reports every `report_every` epochs (train/aggregator/loop.py): which epochs checkpoint, the epoch lines, resume
from the last checkpoint, and where Ray's logs go (runtime.py)."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from _grids import grids_with_a_known_target
from slidegrid.errors import ConfigError
from slidegrid.runtime import ray_log_path
from slidegrid.train.aggregator.config import build_train_config
from slidegrid.train.aggregator.fit import train_with_ray
from slidegrid.train.checkpoints import epoch_line, read_state


def _state(result) -> dict:
    with result.checkpoint.as_directory() as d:
        return read_state(d)


@pytest.mark.slow
def test_reports_every_n_epochs_and_resumes_from_the_last_checkpoint(tmp_path, ray_local):
    cohort = grids_with_a_known_target(tmp_path, n=12)
    base = {"grids": str(tmp_path / "grids"), "cohort": cohort, "out": str(tmp_path / "run"), "name": "r",
            "task": "regression", "recipe": "none", "optimizer": "adam", "lr": 0.01, "patience": 0,
            "report_every": 3, "model_kwargs": {"maps": 4}}
    first = train_with_ray(build_train_config({**base, "epochs": 8}))
    # Reports (0-based epochs) 2, 5 and the last, 7; Ray Train keeps the newest two checkpoints.
    assert sorted(m["epoch"] for _, m in first.best_checkpoints) == [5, 7]
    assert [h["epoch"] for h in _state(first)["history"]] == list(range(8))  # epochs between reports kept too
    # Same name + storage, more epochs: resumes after the last checkpoint (epoch 7), reports 8 and the last, 10.
    second = train_with_ray(build_train_config({**base, "epochs": 11}))
    assert sorted(m["epoch"] for _, m in second.best_checkpoints) == [8, 10]
    history = _state(second)["history"]
    assert [h["epoch"] for h in history] == list(range(11))
    assert [h["resumed_from"] for h in history] == [0] * 8 + [8] * 3
    with pytest.raises(ConfigError, match="report_every"):
        build_train_config({**base, "report_every": 0})


def test_epoch_line_shows_losses_and_validation_metrics():
    metrics = {"epoch": 3, "train_loss": 0.5, "lr": 1e-3, "resumed_from": 0, "epoch_seconds": 0.0712,
               "train_grids": 14, "val_loss": np.float32(0.25), "val_auc": 0.91666, "best_epoch": 2}
    assert epoch_line(metrics, 30) == "epoch 4/30  train_loss 0.5  val_loss 0.25  val_auc 0.9167  0.07 s"
    assert epoch_line({"epoch": 0, "train_loss": 1.0}) == "epoch 1  train_loss 1"


def test_ray_logs_live_beside_local_outputs_else_in_the_temp_dir(tmp_path):
    assert ray_log_path(str(tmp_path / "out")) == str(tmp_path / "out" / "logs" / "ray.log")
    assert ray_log_path(f"file://{tmp_path}/out") == str(tmp_path / "out" / "logs" / "ray.log")
    for remote in ("s3://bucket/grids", None):
        assert ray_log_path(remote) == os.path.join(tempfile.gettempdir(), "slidegrid-logs", f"ray-{os.getpid()}.log")
