"""The one Ray Train runner of every trainer (aggregators, tile encoders, segmentation members): plans a run's
workers on the cluster and runs a loop with them, resuming by name + storage, failing with one line when its
workers cannot start."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

from ..errors import ConfigError
from ..placement import OVERRIDE_HELP, RunPlan, Watchdog

log = logging.getLogger(__name__)


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
