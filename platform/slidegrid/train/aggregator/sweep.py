"""Ray Tune sweeps over Ray Train runs: a YAML search space, ASHA, MLflow runs nested under the sweep."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml

from ...errors import ConfigError
from .config import TrainConfig, read_yaml, with_overrides

SAMPLERS = ("choice", "uniform", "loguniform", "randint", "grid")


@dataclass(frozen=True)
class SweepSpace:
    """A search space: TrainConfig fields (or model_kwargs.NAME) -> sampler, plus the metric to optimise."""

    params: dict[str, dict[str, Any]]
    metric: str = "val_loss"
    mode: str = "min"


def load_space(path: str) -> SweepSpace:
    """Read and validate a search-space YAML (`params: {lr: {loguniform: [1e-4, 1e-2]}}`)."""
    raw = read_yaml(path, "search space file")
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigError(path, "needs a `params:` mapping, e.g. params: {lr: {loguniform: [1.0e-4, 1.0e-2]}}")
    fields = set(TrainConfig.__dataclass_fields__)
    for name, spec in params.items():
        if name.split(".")[0] not in fields:
            raise ConfigError(path, f"{name!r} is not a training option; valid: {sorted(fields)}")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
            raise ConfigError(path, f"{name}: give exactly one sampler of {', '.join(SAMPLERS)}")
    mode = raw.get("mode", "min")
    if mode not in ("min", "max"):
        raise ConfigError(path, "mode must be min or max")
    return SweepSpace(params=params, metric=raw.get("metric", "val_loss"), mode=mode)


def _tune_space(space: SweepSpace) -> dict[str, Any]:
    from ray import tune

    out = {}
    for name, spec in space.params.items():
        kind, arg = next(iter(spec.items()))
        out[name] = {"choice": lambda a: tune.choice(a), "uniform": lambda a: tune.uniform(*a),
                     "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a),
                     "grid": lambda a: tune.grid_search(a)}[kind](arg)
    return out


def apply_trial(base: TrainConfig, trial: dict[str, Any], trial_name: str) -> TrainConfig:
    """The base config with a trial's sampled values (model_kwargs.X goes into model_kwargs)."""
    kw = dict(base.model_kwargs)
    plain = {}
    for k, v in trial.items():
        if k.startswith("model_kwargs."):
            kw[k.split(".", 1)[1]] = v
        else:
            plain[k] = v
    return with_overrides(base, **plain, model_kwargs=kw, name=trial_name, tracking_uri=base.tracking_uri)


def _trial(trial_config: dict[str, Any], fixed: dict[str, Any], callbacks: list, trial_id: str) -> None:
    """One Tune trial = one Ray Train run reporting every epoch back to Tune."""
    from .fit import train_with_ray

    cfg = apply_trial(TrainConfig(**fixed["base"]), trial_config, f"trial-{trial_id}")
    train_with_ray(cfg, callbacks=callbacks, plan=fixed["plan"], watch=False)


@dataclass(frozen=True)
class TuneConfig:
    """Everything `slidegrid tune` takes: the training run each trial varies, the search space, the sweep's size."""

    train: TrainConfig
    space: SweepSpace
    trials: int = 8
    max_concurrent: int | None = None  # trials at once (None: as many as the cluster fits, placement.plan_runs)
    grace_epochs: int = 1  # ASHA: epochs a trial runs before it may be stopped

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError("--trials", "must be at least 1")
        if self.grace_epochs < 1:
            raise ConfigError("--grace-epochs", "must be at least 1")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError("--max-concurrent", "must be at least 1")


@dataclass(frozen=True)
class TuneReport:
    """The best trial of a sweep (also in `best_yaml`) and the sweep's MLflow run."""

    metric: str
    mode: str
    best_value: float
    best_params: dict[str, Any]
    best_checkpoint: str | None
    trials: int
    stopped_early: int  # trials ASHA (or early stopping) ended before their last epoch
    best_yaml: str
    mlflow_run_id: str | None


def run_tune(config: TuneConfig) -> TuneReport:
    """Run the sweep: `trials` Ray Train runs of `config.train` with values drawn from the space; the best is
    saved as best.yaml in the training run's out folder.

    ASHA stops trials after `grace_epochs` epochs at the earliest, and a stopped trial frees its Train workers at
    once (train/trials.py).
    """
    from ray.tune.schedulers import ASHAScheduler

    from ..runner import plan_training
    from ..trials import CHECKPOINT_PATH, run_trials, trial_for
    from .registry import log_sweep

    base, space = config.train, config.space
    plan = plan_training(base, runs=config.trials, max_concurrent=config.max_concurrent, trials=True)
    os.makedirs(base.out, exist_ok=True)
    storage = base.storage or os.path.abspath(os.path.join(base.out, "tune"))
    grid = run_trials(trial_for(_trial, "TrainTrial"), _tune_space(space), {"base": base.to_dict()}, plan,
                      base.name or "sweep", storage, what="tune sweep", num_samples=config.trials,
                      metric=space.metric, mode=space.mode,
                      scheduler=ASHAScheduler(grace_period=config.grace_epochs, max_t=base.epochs, time_attr="epoch"))
    if not any(r.metrics and space.metric in r.metrics for r in grid):
        errors = [str(r.error).strip().splitlines()[-1] for r in grid if r.error]
        raise ConfigError("tune", f"no trial reported {space.metric}" + (f"; the first failed with: {errors[0][:300]}"
                                                                         if errors else ""))
    best = grid.get_best_result(metric=space.metric, mode=space.mode, scope="all")
    summary = {"metric": space.metric, "mode": space.mode, "best_value": float(best.metrics[space.metric]),
               "best_params": dict(best.config), "best_checkpoint": best.metrics.get(CHECKPOINT_PATH),
               "trials": len(grid), "stopped_early": sum(_stopped_early(r, base.epochs) for r in grid)}
    best_yaml = os.path.join(base.out, "best.yaml")
    with open(best_yaml, "w") as f:
        yaml.safe_dump(summary, f, sort_keys=False)
    return TuneReport(**summary, best_yaml=best_yaml, mlflow_run_id=log_sweep(base, space, grid))


def _stopped_early(result, epochs: int) -> bool:
    """A trial that ended (ASHA or early stopping) before its last epoch."""
    df = result.metrics_dataframe
    return df is not None and "epoch" in df and len(df) > 0 and int(df["epoch"].max()) < epochs - 1
