"""Driver side of `slidegrid train-seg` (papers/digipathai-ensemble-segmentation-framework.txt, "Training"):
each ensemble member is trained on a different cross-validation fold, the members in parallel as Ray Tune
trials (one Ray Train run each); the members are tracked in MLflow under one parent run and registered as
one ensemble model. A single member is one Ray Train run, registered the same way (an ensemble of one).
Each member trains with its paper's recipe (seg_config.SEG_RECIPES); its encoder starts from ImageNet weights
when --encoder-weights names a file or the local caches hold them ("Training"), else from random weights, after
one warning saying how to supply them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import ConfigError
from ...io.archive import SlideRecord, read_cohort
from ...placement import RunPlan
from ...tracking import log_history, log_registered_model, safe_params, tracked_run
from ..checkpoints import read_state
from ..runner import plan_training, run_trainer
from ..splits import check_patients_apart
from .config import SegTrainConfig
from .data import IMAGENET_MEAN, IMAGENET_STD, patch_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemberResult:
    """One trained member: its architecture, held-out fold, best-validation weights and epoch history."""

    name: str
    val_fold: int
    state: dict[str, Any]
    history: list[dict[str, Any]]
    encoder_weights: str = "random"  # where the worker's encoder started from (EncoderWeights.source)
    encoder_pretrained: bool = False
    freeze_epochs: int = 0  # epochs the encoder was actually frozen

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
    """(architecture, validation fold) per member: member i holds out the i-th fold. ConfigError when a patient's
    slides lie on both sides of a member's split (train/splits.py)."""
    folds = sorted({int(r.fold) for r in records if r.fold is not None})
    if len(folds) < 2:
        raise ConfigError(cfg.cohort, f"needs at least 2 folds in `fold`, found {folds}")
    if cfg.model != "ensemble":
        fold = folds[0] if cfg.val_fold is None else cfg.val_fold
        if fold not in folds:
            raise ConfigError("--val-fold", f"{fold} is not a fold of {cfg.cohort} ({folds})")
        plan = [(cfg.model, fold)]
    elif len(cfg.members) > len(folds):
        raise ConfigError("--members", f"{len(cfg.members)} members need as many folds; {cfg.cohort} has {folds}")
    else:
        plan = list(zip(cfg.members, folds))
    for _, fold in plan:
        check_patients_apart({"train": [(r.slide_id, r.patient_id) for r in records if r.fold != fold],
                              "validation": [(r.slide_id, r.patient_id) for r in records if r.fold == fold]},
                             f"validation fold {fold}")
    return plan


def plan_encoder_weights(cfg: SegTrainConfig) -> dict[str, Any]:
    """member -> EncoderWeights (None for MRN) as the driver finds them; a named file that is missing is a
    ConfigError before anything starts, and members left random under "auto" get ONE warning for the whole run,
    saying how to supply their weights. (Each worker looks again where it loads them.)"""
    from ...models.segmentation import AUTO, how_to_get_encoder_weights
    from .loop import member_weights

    found = {m: member_weights(cfg, m) for m in dict.fromkeys(cfg.member_names)}
    missing = [(m, w) for m, w in found.items() if w is not None and not w.pretrained and cfg.encoder_request(m) == AUTO]
    if missing:
        several = len(cfg.member_names) > 1
        ways = "; ".join(f"{m} ({w.encoder}): " + how_to_get_encoder_weights(
            w.encoder, f"--encoder-weights {m}=FILE" if several else "--encoder-weights FILE") for m, w in missing)
        log.warning("no ImageNet weights found for the encoder of %s: %s starts from random initialisation and is "
                    "not frozen (the paper's encoders are ImageNet-pretrained, DigiPathAI \"Training\"). Nothing is "
                    "downloaded; to supply them: %s. --encoder-weights random starts from random weights without "
                    "this warning", ", ".join(m for m, _ in missing), "it" if len(missing) == 1 else "each", ways)
    for m, w in found.items():
        if w is not None and w.pretrained:
            log.info("%s: encoder weights %s (sha256 %s), frozen for %d epochs", m, w.source, w.digest,
                     cfg.freeze_epochs_for(m, True))
    return found


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
    from .loop import seg_train_loop

    return seg_train_loop


def _member_trial(trial_config: dict[str, Any], fixed: dict[str, Any], callbacks: list, trial_id: str) -> None:
    """One Tune trial = one member's Ray Train run."""
    train_member(SegTrainConfig(**fixed["base"]), int(trial_config["index"]), fixed["plan"], callbacks=callbacks,
                 watch=False)


def _train_parallel(cfg: SegTrainConfig, plan: RunPlan, n: int) -> list[dict[str, Any]]:
    """The members as Tune trials, `plan.concurrent` at once; their final checkpoints' states in member order."""
    from ray import tune

    from ..trials import CHECKPOINT_PATH, run_trials, trial_for

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
    inputs = {(tuple(cfg.patch_spec(m).mpps), cfg.patch_spec(m).patch_size) for m in cfg.member_names}
    if len(inputs) != 1:
        raise ConfigError("--members", f"members must share their input resolutions and patch size; their recipes "
                                       f"differ ({sorted(inputs)}): do not mix MRN and U-Nets, or set --mpps and "
                                       "--patch-size for all")
    mpps, patch_size = next(iter(inputs))
    return {"mpps": list(mpps), "patch_size": patch_size, "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "names": list(cfg.member_names)}


def run_train_seg(cfg: SegTrainConfig) -> SegTrainReport:
    """Train the member(s), write OUT/ensemble.pt, track and register the ensemble in MLflow."""
    from ...models.seg_ensemble import save_ensemble

    plan = member_plan(cfg, _cohort(cfg))
    spec = _spec(cfg)
    plan_encoder_weights(cfg)
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
    members = [MemberResult(name, fold, s["model"], s["history"], s.get("encoder_weights", "random"),
                            bool(s.get("encoder_pretrained", False)), int(s.get("freeze_epochs", 0)))
               for (name, fold), s in zip(plan, states)]
    path = os.path.join(os.path.abspath(cfg.out), "ensemble.pt")
    save_ensemble(path, [{"name": m.name, "kwargs": cfg.member_kwargs(m.name), "state": m.state} for m in members],
                  spec)
    run_id, uri = log_segmentation_run(cfg, members, path)
    return SegTrainReport(members, path, uri, run_id)


def log_segmentation_run(cfg: SegTrainConfig, members: list[MemberResult], checkpoint: str) -> tuple[str, str]:
    """A parent MLflow run with one nested run per member; the ensemble registered as one model."""
    import mlflow

    from ...models.seg_ensemble import load_ensemble

    name = cfg.register_as or f"slidegrid-seg-{cfg.model}"
    params = {k: v for k, v in cfg.to_dict().items() if k != "model_kwargs"}
    with tracked_run("slidegrid-train-seg", f"train-seg-{cfg.model}", cfg.out, cfg.tracking_uri, params) as parent:
        for i, m in enumerate(members):
            with mlflow.start_run(run_name=f"member{i}-{m.name}-fold{m.val_fold}", nested=True):
                mlflow.log_params(safe_params({"member": m.name, "val_fold": m.val_fold, "index": i,
                                               **cfg.member_kwargs(m.name), **recipe_params(cfg, m)}))
                log_history(m.history)
                mlflow.log_metrics({f"best_{k}": float(v) for k, v in m.best.items() if k.startswith("val_")})
        mlflow.log_metrics({"members": len(members),
                            "mean_best_val_dice": sum(m.best["val_dice"] for m in members) / len(members)})
        mlflow.log_artifact(checkpoint)
        uri = log_registered_model(load_ensemble(checkpoint), name)
    print(f"mlflow: run {parent.info.run_id}, model {uri} ({mlflow.get_tracking_uri()})")
    return parent.info.run_id, uri


def recipe_params(cfg: SegTrainConfig, member: MemberResult) -> dict[str, Any]:
    """What a member trained with, for MLflow: the recipe values used, their source, which of them this run
    overrode (`recipe_overrides`) or the paper leaves unstated, and where the encoder weights came from."""
    recipe = asdict(cfg.recipe(member.name))
    source, unstated = recipe.pop("source"), recipe.pop("unstated")
    overrides = cfg.overrides(member.name)
    return {**recipe, "freeze_epochs": member.freeze_epochs, "recipe_source": source,
            "recipe_unstated": ",".join(unstated) or "none",
            "recipe_overrides": ",".join(f"{k}={v}" for k, v in overrides.items()) or "none",
            "encoder_weights": member.encoder_weights, "encoder_pretrained": member.encoder_pretrained}


def summary(report: SegTrainReport) -> list[dict[str, Any]]:
    """One row per member: architecture, fold, best epoch's validation numbers."""
    return [{"member": m.name, "val_fold": m.val_fold, "encoder_weights": m.encoder_weights,
             **{k: v for k, v in m.best.items() if k in ("epoch", "val_loss", "val_dice")}}
            for m in report.members]

