"""Driver side of training: run the Ray Train loop, then evaluate, plot and register the model in MLflow."""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..io.grids import read_grid_meta
from ..io.storage import join
from ..placement import OVERRIDE_HELP, RunPlan, Watchdog
from .checkpoints import read_state
from .config import TrainConfig
from .recipes import check_grid, recipe_for

log = logging.getLogger(__name__)


@dataclass
class FitResult:
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


def run_trainer(loop, loop_config: dict[str, Any], name: str, storage: str, plan: RunPlan, max_failures: int = 2,
                callbacks: list | None = None, datasets: dict[str, Any] | None = None, watch: bool = True):
    """Run a Ray Train loop placed by `plan` (same name + storage = resume) and return Ray's Result.

    The run's Ray Data streams use only the CPUs the plan keeps for reads, and a worker group that cannot
    start within `plan.start_timeout_s` fails the run with a ConfigError naming the flags to change,
    instead of Ray Train retrying forever. `watch` (the driver's own runs; Tune trials are watched by the
    sweep): a Watchdog says within a minute when the run waits for resources.
    """
    import ray.train
    from ray.data import ExecutionOptions, ExecutionResources
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.exceptions import (
        WorkerGroupStartupFailedError,
        WorkerGroupStartupTimeoutError,
    )

    from ..runtime import init_ray

    resources = init_ray()
    per_worker = {"CPU": plan.cpus_per_worker, **({"GPU": plan.gpus_per_worker} if plan.gpus_per_worker else {})}
    data_config = None
    if datasets:
        # Ray Data plans its budget from the whole cluster; the Train workers' CPUs are not its to use.
        held = float(resources.get("CPU", 0.0)) - plan.data_cpus
        data_config = ray.train.DataConfig(execution_options=ExecutionOptions(
            exclude_resources=ExecutionResources(cpu=max(held, 0.0))))
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        datasets=datasets,
        dataset_config=data_config,
        scaling_config=ray.train.ScalingConfig(num_workers=plan.workers, use_gpu=plan.gpus_per_worker > 0,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage, callbacks=callbacks or [],
            failure_config=ray.train.FailureConfig(max_failures=max_failures,
                                                   controller_failure_limit=plan.start_attempts),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Ray Train's per-report INFO lines drown the job's own output; --debug brings them back.
            logging_config=ray.train.LoggingConfig(
                log_level="INFO" if log.isEnabledFor(logging.INFO) else "WARNING")),
    )
    try:
        with Watchdog(f"training {name}", OVERRIDE_HELP) if watch else nullcontext():
            return trainer.fit()
    except ray.train.ControllerError as exc:
        if not isinstance(exc.controller_failure, (WorkerGroupStartupTimeoutError, WorkerGroupStartupFailedError)):
            raise
        raise ConfigError("--workers", f"Ray Train could not start {plan.workers} worker(s) x {per_worker} within "
                                       f"{plan.start_timeout_s:g} s ({type(exc.controller_failure).__name__}); "
                                       f"the cluster has {_resources_text(resources)}; use fewer --workers, "
                                       "--cpus-per-worker, --max-concurrent or a longer --start-timeout") from None


def _resources_text(resources: dict[str, float]) -> str:
    """'4 CPU, 1 GPU' from a Ray resource dict."""
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def plan_training(cfg: Any, *, runs: int = 1, reads: bool = False, max_concurrent: int | None = None,
                  trials: bool = False) -> RunPlan:
    """Plan `runs` Train runs of a training config (its workers, cpus_per_worker, gpus_per_worker,
    start_timeout_s and, where it streams a Ray Dataset (`reads`), data_cpus) on the connected or a new
    local Ray cluster; `trials`: each run is a Tune trial. Logs the plan; ConfigError when it cannot fit."""
    from ..placement import TRIAL_CPUS, ClusterShape, plan_runs
    from ..runtime import init_ray

    init_ray()
    plan = plan_runs(ClusterShape.current(), runs=runs, workers=cfg.workers, cpus_per_worker=cfg.cpus_per_worker,
                     gpus_per_worker=cfg.gpus_per_worker, reads=reads, data_cpus=getattr(cfg, "data_cpus", None),
                     max_concurrent=max_concurrent, trial_cpus=TRIAL_CPUS if trials else 0.0,
                     start_timeout_s=cfg.start_timeout_s)
    log.info("placement: %s", plan.describe())
    return plan


def train_with_ray(cfg: TrainConfig, callbacks: list | None = None, plan: RunPlan | None = None,
                   watch: bool = True):
    """Run the Ray Train loop for a config (placed by `plan`, default planned here) and return Ray's Result."""
    from .loop import train_loop

    storage = cfg.storage or os.path.abspath(join(cfg.out, "checkpoints"))
    return run_trainer(train_loop, cfg.to_dict(), run_name(cfg), storage, plan or plan_training(cfg),
                       cfg.max_failures, callbacks, watch=watch)


def fit(cfg: TrainConfig, log_to_mlflow: bool = True, parent_run_id: str | None = None) -> FitResult:
    """Train (resuming if a run of the same name exists in storage), then track and register the model."""

    from .grid_data import load_examples

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
    return FitResult(dict(result.metrics or {}), history, ckpt_dir, run_id, model_uri, test)


def cross_validate(cfg: TrainConfig) -> dict[int, FitResult]:
    """k-fold cross-validation over the cohort's `fold` column: each fold is the test set once, validated on the
    next fold in order (it selects the model), trained on the rest (NIC §4's protocol, rotated)."""
    from dataclasses import replace

    from ..errors import ConfigError
    from .grid_data import load_examples

    folds = sorted({e.fold for e in load_examples(cfg.grids, cfg.cohort, cfg.task, cfg.storage_options).examples
                    if e.fold is not None})
    if len(folds) < 3:
        raise ConfigError(cfg.cohort, "cross-validation needs a `fold` column with at least 3 values (train, "
                                      "validation and test folds)")
    return {k: fit(replace(cfg, test_fold=k, val_fold=None, name=None, out=os.path.join(cfg.out, f"fold{k}")))
            for k in folds}
