"""Driver side of aggregator training: run its Ray Train loop (train/runner.py), then evaluate, plot and register the
model in MLflow."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ...io.grids import read_grid_meta
from ...io.storage import join
from ...placement import RunPlan
from ..checkpoints import read_state
from ..runner import plan_training, run_trainer
from .config import TrainConfig
from .recipes import check_grid, recipe_for


@dataclass
class TrainReport:
    """What a training run produced."""

    metrics: dict[str, Any]  # last reported epoch
    history: list[dict[str, Any]]  # every reported epoch
    checkpoint_dir: str | None  # local copy of the last checkpoint
    run_id: str | None  # MLflow run
    model_uri: str | None  # MLflow model URI (registered version when registered)
    test: dict[str, float] = field(default_factory=dict)  # test_* metrics of the selected model (no test set: {})


def run_name(cfg: TrainConfig) -> str:
    """Ray Train run name: explicit, or derived from model/task/fold (same name + storage = resume)."""
    folds = "".join(f"-{k}{v}" for k, v in (("val", cfg.val_fold), ("test", cfg.test_fold)) if v is not None)
    return cfg.name or f"{cfg.model}-{cfg.task}{folds}"


def train_with_ray(cfg: TrainConfig, callbacks: list | None = None, plan: RunPlan | None = None,
                   watch: bool = True):
    """Run the Ray Train loop for a config (placed by `plan`, default planned here) and return Ray's Result."""
    from .loop import train_loop

    storage = cfg.storage or os.path.abspath(join(cfg.out, "checkpoints"))
    return run_trainer(train_loop, cfg.to_dict(), run_name(cfg), storage, plan or plan_training(cfg),
                       cfg.max_failures, callbacks, watch=watch)


def run_train(cfg: TrainConfig, log_to_mlflow: bool = True, parent_run_id: str | None = None) -> TrainReport:
    """Train (resuming if a run of the same name exists in storage), then track and register the model."""

    from .data import load_examples

    split = load_examples(cfg.grids, cfg.cohort, cfg.task, cfg.storage_options).split(cfg.val_fold, cfg.test_fold)
    if cfg.recipe == "paper" and split.train:
        check_grid(recipe_for(cfg.model, cfg.task), read_grid_meta(split.train[0].grid, cfg.storage_options) or {},
                   cfg.model)
    result = train_with_ray(cfg)
    history: list[dict[str, Any]] = []
    ckpt_dir = None
    if result.checkpoint is not None:
        ckpt_dir = result.checkpoint.to_directory(os.path.join(os.path.abspath(cfg.out), "final-checkpoint"))
        # Every epoch's metrics travel in the checkpoint, so the history survives restarts of the run.
        history = read_state(ckpt_dir)["history"]
    run_id = model_uri = None
    test: dict[str, float] = {}
    if ckpt_dir:
        from .registry import load_checkpoint_model, log_training_run, score_test_set

        test = score_test_set(cfg, load_checkpoint_model(ckpt_dir, cfg)[0], split.test)
        if log_to_mlflow:
            run_id, model_uri = log_training_run(cfg, history, ckpt_dir, test, split, parent_run_id=parent_run_id)
    return TrainReport(dict(result.metrics or {}), history, ckpt_dir, run_id, model_uri, test)


def cross_validate(cfg: TrainConfig) -> dict[int, TrainReport]:
    """k-fold cross-validation over the cohort's `fold` column: each fold is the test set once, validated on the
    next fold in order (it selects the model), trained on the rest (NIC §4's protocol, rotated)."""
    from dataclasses import replace

    from ...errors import ConfigError
    from .data import load_examples

    folds = sorted({e.fold for e in load_examples(cfg.grids, cfg.cohort, cfg.task, cfg.storage_options).examples
                    if e.fold is not None})
    if len(folds) < 3:
        raise ConfigError(cfg.cohort, "cross-validation needs a `fold` column with at least 3 values (train, "
                                      "validation and test folds)")
    return {k: run_train(replace(cfg, test_fold=k, val_fold=None, name=None, out=os.path.join(cfg.out, f"fold{k}")))
            for k in folds}
