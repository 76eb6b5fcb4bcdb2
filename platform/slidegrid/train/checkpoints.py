"""Ray Train checkpoints of every slidegrid loop: one `state.pt` (weights, optimizer, epoch, history) per epoch.

Every epoch's metrics travel inside the state, so a run restored after a failure keeps its whole history.
"""

from __future__ import annotations

import os
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


def report_epoch(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    """Report an epoch's metrics on every rank; the rank that passes a state (rank 0) also checkpoints it."""
    import ray.train
    import torch
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if state is not None:
            torch.save(state, os.path.join(d, STATE_FILE))
            checkpoint = Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)
