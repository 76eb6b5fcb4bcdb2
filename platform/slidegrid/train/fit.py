"""Driver side of training: run the Ray Train loop, then evaluate, plot and register the model in MLflow."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from ..storage import join
from .checkpoints import read_state
from .config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a training run produced."""

    metrics: dict[str, Any]  # last reported epoch
    history: list[dict[str, Any]]  # every reported epoch
    checkpoint_dir: str | None  # local copy of the last checkpoint
    run_id: str | None  # MLflow run
    model_uri: str | None  # MLflow model URI (registered version when registered)


def run_name(cfg: TrainConfig) -> str:
    """Ray Train run name: explicit, or derived from model/task/fold (same name + storage = resume)."""
    return cfg.name or f"{cfg.model}-{cfg.task}" + (f"-fold{cfg.val_fold}" if cfg.val_fold is not None else "")


def run_trainer(loop, loop_config: dict[str, Any], name: str, storage: str, workers: int = 1,
                gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, max_failures: int = 2,
                callbacks: list | None = None, datasets: dict[str, Any] | None = None):
    """Run a Ray Train loop on `workers` workers (same name + storage = resume) and return Ray's Result."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from ..runtime import init_ray

    init_ray()
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        datasets=datasets,
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=gpus_per_worker > 0,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage, callbacks=callbacks or [],
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Ray Train's per-report INFO lines drown the job's own output; --debug brings them back.
            logging_config=ray.train.LoggingConfig(
                log_level="INFO" if log.isEnabledFor(logging.INFO) else "WARNING")),
    )
    return trainer.fit()


def train_with_ray(cfg: TrainConfig, callbacks: list | None = None):
    """Run the Ray Train loop for a config and return Ray's Result."""
    from .loop import train_loop

    storage = cfg.storage or os.path.abspath(join(cfg.out, "checkpoints"))
    return run_trainer(train_loop, cfg.to_dict(), run_name(cfg), storage, cfg.workers, cfg.gpus_per_worker,
                       cfg.cpus_per_worker, cfg.max_failures, callbacks)


def fit(cfg: TrainConfig, log_to_mlflow: bool = True, parent_run_id: str | None = None) -> FitResult:
    """Train (resuming if a run of the same name exists in storage), then track and register the model."""

    result = train_with_ray(cfg)
    history: list[dict[str, Any]] = []
    ckpt_dir = None
    if result.checkpoint is not None:
        ckpt_dir = result.checkpoint.to_directory(os.path.join(os.path.abspath(cfg.out), "final-checkpoint"))
        # Every epoch's metrics travel in the checkpoint, so the history survives restarts of the run.
        history = read_state(ckpt_dir)["history"]
    run_id = model_uri = None
    if log_to_mlflow and ckpt_dir:
        from .registry import log_training_run

        run_id, model_uri = log_training_run(cfg, history, ckpt_dir, parent_run_id=parent_run_id)
    return FitResult(dict(result.metrics or {}), history, ckpt_dir, run_id, model_uri)


def cross_validate(cfg: TrainConfig) -> dict[int, FitResult]:
    """One run per fold of the cohort's `fold` column, each validated on its held-out fold (k-fold CV)."""
    from dataclasses import replace

    from ..errors import ConfigError
    from .grid_data import load_examples

    folds = sorted({e.fold for e in load_examples(cfg.grids, cfg.cohort, cfg.task, cfg.storage_options).examples
                    if e.fold is not None})
    if len(folds) < 2:
        raise ConfigError(cfg.cohort, "cross-validation needs a `fold` column with at least 2 values")
    return {k: fit(replace(cfg, val_fold=k, name=None, out=os.path.join(cfg.out, f"fold{k}"))) for k in folds}
