"""Driver side of `slidegrid train-seg` (papers/digipathai-ensemble-segmentation-framework.txt, "Training"):
each ensemble member is trained on a different cross-validation fold, the members in parallel as Ray Tune
trials (one Ray Train run each); the members are tracked in MLflow under one parent run and registered as
one ensemble model. A single member is one Ray Train run, registered the same way (an ensemble of one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..archive import SlideRecord, read_cohort
from ..errors import ConfigError
from ..placement import RunPlan
from ..seg_patches import IMAGENET_MEAN, IMAGENET_STD, patch_dataset
from .checkpoints import read_state
from .fit import plan_training, run_trainer
from .seg_config import SegTrainConfig
from .tracking import log_history, log_registered_model, resolve_tracking_uri, safe_params, use_experiment


@dataclass(frozen=True)
class MemberResult:
    """One trained member: its architecture, held-out fold, best-validation weights and epoch history."""

    name: str
    val_fold: int
    state: dict[str, Any]
    history: list[dict[str, Any]]

    @property
    def best(self) -> dict[str, Any]:
        """The epoch with the lowest validation loss."""
        return min(self.history, key=lambda h: h["val_loss"])


@dataclass(frozen=True)
class SegTrainReport:
    """What `train-seg` produced."""

    members: list[MemberResult]
    checkpoint: str  # local ensemble.pt
    model_uri: str | None  # registered MLflow model (models:/NAME/VERSION)
    run_id: str | None


def _cohort(cfg: SegTrainConfig) -> list[SlideRecord]:
    records = read_cohort(cfg.cohort, cfg.storage_options)
    if not any(r.annotation for r in records):
        raise ConfigError(cfg.cohort, "no slide has an `annotation`; segmentation training needs tumour "
                                      "polygons (GeoJSON/ASAP XML) for at least one slide")
    if any(r.fold is None for r in records):
        raise ConfigError(cfg.cohort, "every slide needs a `fold` (members are validated on held-out folds)")
    return records


def member_plan(cfg: SegTrainConfig, records: list[SlideRecord]) -> list[tuple[str, int]]:
    """(architecture, validation fold) per member: member i holds out the i-th fold."""
    folds = sorted({int(r.fold) for r in records if r.fold is not None})
    if len(folds) < 2:
        raise ConfigError(cfg.cohort, f"needs at least 2 folds in `fold`, found {folds}")
    if cfg.model != "ensemble":
        fold = folds[0] if cfg.val_fold is None else cfg.val_fold
        if fold not in folds:
            raise ConfigError("--val-fold", f"{fold} is not a fold of {cfg.cohort} ({folds})")
        return [(cfg.model, fold)]
    if len(cfg.members) > len(folds):
        raise ConfigError("--members", f"{len(cfg.members)} members need as many folds; {cfg.cohort} has {folds}")
    return list(zip(cfg.members, folds))


def _rows(records: list[SlideRecord]) -> list[dict[str, Any]]:
    return [{"slide_id": r.slide_id, "uri": r.uri, "annotation": r.annotation, "mpp": r.mpp} for r in records]


def train_member(cfg: SegTrainConfig, index: int, plan: RunPlan, callbacks: list | None = None,
                 watch: bool = True):
    """One member as one Ray Train run (placed by `plan`) on patches streamed from its training folds;
    returns Ray's Result."""
    records = _cohort(cfg)
    member, fold = member_plan(cfg, records)[index]
    train = _rows([r for r in records if r.fold != fold])
    val = _rows([r for r in records if r.fold == fold])
    datasets = {
        "train": patch_dataset(train, cfg.patch_spec(member), cfg.patches_per_slide, None, cfg.storage_options),
        "val": patch_dataset(val, cfg.patch_spec(member, augment=False), cfg.val_patches_per_slide, cfg.seed,
                             cfg.storage_options),
    }
    storage = cfg.storage or os.path.abspath(os.path.join(cfg.out, "checkpoints"))
    name = f"{cfg.name or 'train-seg'}-member{index}-{member}-fold{fold}"
    return run_trainer(_loop(), {**cfg.to_dict(), "member": member}, name, storage, plan, cfg.max_failures,
                       callbacks, datasets, watch=watch)


def _loop():
    from .seg_loop import seg_train_loop

    return seg_train_loop


def _member_trial(trial_config: dict[str, Any], fixed: dict[str, Any], callbacks: list, trial_id: str) -> None:
    """One Tune trial = one member's Ray Train run."""
    train_member(SegTrainConfig(**fixed["base"]), int(trial_config["index"]), fixed["plan"], callbacks=callbacks,
                 watch=False)


def _train_parallel(cfg: SegTrainConfig, plan: RunPlan, n: int) -> list[dict[str, Any]]:
    """The members as Tune trials, `plan.concurrent` at once; their final checkpoints' states in member order."""
    from ray import tune

    from .trials import CHECKPOINT_PATH, run_trials, trial_for

    grid = run_trials(trial_for(_member_trial, "SegMemberTrial"),
                      {"index": tune.grid_search(list(range(n)))}, {"base": cfg.to_dict()}, plan,
                      cfg.name or "train-seg", os.path.abspath(os.path.join(cfg.out, "tune")),
                      what="train-seg members")
    states: dict[int, dict[str, Any]] = {}
    for result in grid:
        index = int(result.config["index"])
        path = (result.metrics or {}).get(CHECKPOINT_PATH)
        if result.error or not path:
            raise ConfigError(f"member {index}", f"training failed: {str(result.error)[:500]}")
        states[index] = read_state(path)
    return [states[i] for i in range(n)]


def _spec(cfg: SegTrainConfig) -> dict[str, Any]:
    mpps = {tuple(cfg.patch_spec(m).mpps) for m in cfg.member_names}
    if len(mpps) != 1:
        raise ConfigError("--members", "members must share their input resolutions (do not mix MRN and U-Nets "
                                       "with different --mpps)")
    return {"mpps": list(next(iter(mpps))), "patch_size": cfg.patch_size, "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "names": list(cfg.member_names)}


def train_segmentation(cfg: SegTrainConfig) -> SegTrainReport:
    """Train the member(s), write OUT/ensemble.pt, track and register the ensemble in MLflow."""
    from ..models.seg_ensemble import save_ensemble

    plan = member_plan(cfg, _cohort(cfg))
    spec = _spec(cfg)
    placement = plan_training(cfg, runs=len(plan), reads=True, max_concurrent=cfg.max_concurrent,
                              trials=len(plan) > 1)
    if len(plan) > 1:
        states = _train_parallel(cfg, placement, len(plan))
    else:
        result = train_member(cfg, 0, placement)
        if result.checkpoint is None:
            raise ConfigError(plan[0][0], f"training produced no checkpoint ({result.error})")
        with result.checkpoint.as_directory() as d:
            states = [read_state(d)]
    members = [MemberResult(name, fold, s["model"], s["history"]) for (name, fold), s in zip(plan, states)]
    path = os.path.join(os.path.abspath(cfg.out), "ensemble.pt")
    save_ensemble(path, [{"name": m.name, "kwargs": cfg.member_kwargs(m.name), "state": m.state} for m in members],
                  spec)
    run_id, uri = log_segmentation_run(cfg, members, path)
    return SegTrainReport(members, path, uri, run_id)


def log_segmentation_run(cfg: SegTrainConfig, members: list[MemberResult], checkpoint: str) -> tuple[str, str]:
    """A parent MLflow run with one nested run per member; the ensemble registered as one model."""
    import mlflow

    from ..models.seg_ensemble import load_ensemble

    use_experiment("slidegrid-train-seg", resolve_tracking_uri(cfg.tracking_uri, cfg.out))
    name = cfg.register_as or f"slidegrid-seg-{cfg.model}"
    with mlflow.start_run(run_name=f"train-seg-{cfg.model}") as parent:
        mlflow.log_params(safe_params({k: v for k, v in cfg.to_dict().items() if k != "model_kwargs"}))
        for i, m in enumerate(members):
            with mlflow.start_run(run_name=f"member{i}-{m.name}-fold{m.val_fold}", nested=True):
                mlflow.log_params(safe_params({"member": m.name, "val_fold": m.val_fold, "index": i,
                                               **cfg.member_kwargs(m.name)}))
                log_history(m.history)
                mlflow.log_metrics({f"best_{k}": float(v) for k, v in m.best.items() if k.startswith("val_")})
        mlflow.log_metrics({"members": len(members),
                            "mean_best_val_dice": sum(m.best["val_dice"] for m in members) / len(members)})
        mlflow.log_artifact(checkpoint)
        uri = log_registered_model(load_ensemble(checkpoint), name)
    print(f"mlflow: run {parent.info.run_id}, model {uri} ({mlflow.get_tracking_uri()})")
    return parent.info.run_id, uri


def summary(report: SegTrainReport) -> list[dict[str, Any]]:
    """One row per member: architecture, fold, best epoch's validation numbers."""
    return [{"member": m.name, "val_fold": m.val_fold, **{k: v for k, v in m.best.items()
                                                          if k in ("epoch", "val_loss", "val_dice")}}
            for m in report.members]

