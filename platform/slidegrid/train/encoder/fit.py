"""Driver side of `train-encoder`: plan and sample the tile dataset, run the Ray Train loop, write the encoder
file that `slidegrid encode --encoder METHOD --weights FILE` reads, and track + register it in MLflow."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..checkpoints import read_state
from .config import EncoderTrainConfig


@dataclass
class EncoderTrainReport:
    """What an encoder training run produced."""

    history: list[dict[str, Any]]  # every epoch's metrics
    encoder_file: str  # --weights for `slidegrid encode --encoder METHOD`
    checkpoint_dir: str  # the last Ray Train checkpoint (full training state)
    run_id: str | None  # MLflow run
    model_uri: str | None  # MLflow model URI (registered version)
    best_epoch: int | None = None  # the epoch (from 0) saved as the encoder when validation selected it


def run_train_encoder(cfg: EncoderTrainConfig) -> EncoderTrainReport:
    """Train one encoder with Ray Train on tiles streamed from the archive, or on the patches of a patch set's
    training split validated on its validation split (resuming a run of the same name). The encoder file
    holds the epoch of lowest validation loss when there is validation (BiGAN: the last), else the last."""

    from ...encoders.learned import save_encoder
    from ..runner import plan_training, run_trainer
    from .data import encoder_datasets, list_input, plan_patches
    from .loop import encoder_train_loop, method_for

    out = os.path.abspath(cfg.out)
    # The input is listed before Ray starts, so a wrong input is one error line and nothing else.
    records, patches = (None, plan_patches(cfg)) if cfg.patches else (list_input(cfg), None)
    plan = plan_training(cfg, reads=True)  # fails fast where the workers would leave the tile reads no CPU
    result = run_trainer(encoder_train_loop, cfg.to_dict(), cfg.run_name, cfg.storage or os.path.join(out, "checkpoints"),
                         plan, cfg.max_failures, datasets=encoder_datasets(cfg, records, patches))
    ckpt_dir = result.checkpoint.to_directory(os.path.join(out, "final-checkpoint"))
    state = read_state(ckpt_dir)
    method = method_for(cfg)
    method.load_state_dict(state["best"]["method"] if "best" in state else state["method"])
    method.eval()
    path = save_encoder(os.path.join(out, f"encoder-{cfg.method}.pt"), method, cfg.mpp)
    run_id = model_uri = None
    if cfg.mlflow:
        from .registry import log_encoder_run

        run_id, model_uri = log_encoder_run(cfg, state["history"], method, path)
    best = state["best"]["epoch"] if "best" in state else None
    return EncoderTrainReport(state["history"], path, ckpt_dir, run_id, model_uri, best)
