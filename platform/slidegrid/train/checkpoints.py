"""Ray Train checkpoints of every slidegrid loop: one `state.pt` (weights, optimizer, epoch, history) per
reported epoch, and the epoch lines the terminal shows.

Every epoch's metrics travel inside the state, so a run restored after a failure keeps its whole history.
"""

from __future__ import annotations

import numbers
import os
import sys
import tempfile
from typing import Any

STATE_FILE = "state.pt"


def read_state(ckpt_dir: str, map_location: Any = "cpu") -> dict[str, Any]:
    """The state saved in a checkpoint directory (tensors only: `weights_only=True`)."""
    import torch

    return torch.load(os.path.join(ckpt_dir, STATE_FILE), map_location=map_location, weights_only=True)


def restore_state(map_location: Any = "cpu") -> dict[str, Any] | None:
    """Inside a Ray Train loop: the state of the run's last checkpoint, or None on a fresh start."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return read_state(d, map_location)


def epoch_line(metrics: dict[str, Any], epochs: int | None = None) -> str:
    """'epoch 4/30  train_loss 0.6660  val_loss 0.6123  val_auc 0.9167  0.05 s' from an epoch's metrics
    (`epoch` counts from 0; the losses and validation metrics, 4 significant digits)."""
    shown = [f"{k} {v:.4g}" for k, v in metrics.items()
             if (k.startswith(("train_", "val_")) or k.endswith("_loss")) and isinstance(v, numbers.Real)
             and not isinstance(v, numbers.Integral)]
    of = f"/{epochs}" if epochs else ""
    seconds = f"  {metrics['epoch_seconds']:.2f} s" if "epoch_seconds" in metrics else ""
    return f"epoch {metrics['epoch'] + 1}{of}  " + "  ".join(shown) + seconds


def report_epoch(metrics: dict[str, Any], state: dict[str, Any] | None, report: bool = True,
                 epochs: int | None = None) -> None:
    """End an epoch on every rank: the rank that passes a state (rank 0) prints the epoch's line (to the
    terminal, runtime.TERMINAL_TAG); with `report`, every rank reports to Ray Train and rank 0 checkpoints.

    `report` must be the same on all ranks: Ray Train's report is a barrier. Each report waits for Ray Train's
    controller poll (2 s by default, 0.5 s on a Ray slidegrid starts: runtime.LOCAL_RAY_ENV), which dwarfs a tiny
    model's epoch, so loops may report every few epochs; the state carries every epoch's metrics either way.
    """
    import ray.train
    import torch
    from ray.train import Checkpoint

    from ..runtime import TERMINAL_TAG

    if state is not None:
        # sys.__stdout__: Ray Train's patched print would also copy the line to stderr (it tees redirected streams).
        print(TERMINAL_TAG + epoch_line(metrics, epochs) + ("  (checkpoint)" if report else ""),
              file=sys.__stdout__, flush=True)
    if not report:
        return
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if state is not None:
            torch.save(state, os.path.join(d, STATE_FILE))
            checkpoint = Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)
