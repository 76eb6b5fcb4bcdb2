"""Typed training configuration: CLI flags and YAML files meet here and are validated once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import yaml

from ...errors import ConfigError
from ...io.storage import absolute_paths
from ...placement import START_TIMEOUT_S
from .data import TASKS
from .recipes import RECIPE_NAMES, recipe_for


@dataclass(frozen=True)
class TrainConfig:
    """One training run of an aggregator on grids."""

    grids: str
    cohort: str
    out: str
    model: str = "attention"
    task: str = "classification"
    recipe: str = "none"  # "paper": the model card's recipe (models/registry.Recipe; build_train_config's default)
    recipe_overrides: tuple[str, ...] = ()  # settings the user changed from the recipe (recorded in MLflow)
    epochs: int = 35
    lr: float = 1e-3
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) or "adam"
    weight_decay: float = 1e-4
    lr_step: int = 0  # epochs between LR decays (0: no step decay)
    lr_gamma: float = 0.1
    batch_size: int = 1  # slides (or crops / sub-grids) per optimizer step
    samples_per_epoch: int | None = None  # training samples per epoch (None: one per training slide)
    augment: bool = False  # attention: the paper's 9 grid transforms + 2x2-pooled (4 µm/px) copies
    crop: int = 400  # NIC: R x R training crops of the grid
    test_crops: int = 10  # NIC: T crops at test time (x 8 dihedral transforms)
    subgrid: int = 8  # RAN segmentation: class-balanced sub-grids of this side
    patience: int = 10  # early stopping on validation loss (0: off)
    report_every: int = 1  # epochs between Ray Train reports + checkpoints (~2 s each; last epoch always)
    val_fold: int | None = None  # validation fold: early stopping and the kept model (default: see test_fold)
    test_fold: int | None = None  # held-out test fold, scored once at the end (validation: the next fold)
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None  # None: planned (1, or a share where nothing else fits)
    start_timeout_s: float = START_TIMEOUT_S  # a run whose workers cannot start in this time fails
    max_failures: int = 2
    storage: str | None = None  # Ray Train checkpoints (local path or s3://); default <out>/checkpoints
    name: str | None = None  # Ray Train run name (same name + storage = resume)
    tracking_uri: str | None = None
    register_as: str | None = None  # MLflow registered model name (default slidegrid-<model>-<task>)
    seed: int = 0
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        absolute_paths(self, "grids", "cohort", "out", "storage")
        from ...models import model_card, registered

        aggregators = registered("aggregator")
        if self.model not in aggregators:
            raise ConfigError("--model", f"{self.model!r} is not one of {', '.join(aggregators)}")
        if self.task not in TASKS:
            raise ConfigError("--task", f"{self.task!r} is not one of {', '.join(TASKS)}")
        if model_card(self.model).per_cell != (self.task == "segmentation"):
            per_cell = [m for m in aggregators if model_card(m).per_cell]
            raise ConfigError("--model", f"{self.model} does not do {self.task}: {', '.join(per_cell)} predict per "
                                         "cell (task segmentation), the others per slide")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError("optimizer", f"{self.optimizer!r} is not sgd or adam")
        if self.recipe not in RECIPE_NAMES:
            raise ConfigError("--recipe", f"{self.recipe!r} is not one of {', '.join(RECIPE_NAMES)}")
        object.__setattr__(self, "recipe_overrides", tuple(self.recipe_overrides))
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise ConfigError("samples_per_epoch", "must be at least 1 (or unset: one per training slide)")
        for name in ("epochs", "batch_size", "crop", "test_crops", "subgrid", "workers", "report_every"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be at least 1")
        if self.lr <= 0:
            raise ConfigError("lr", "must be positive")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (Ray Train's train_loop_config, MLflow params)."""
        return asdict(self)


def read_yaml(path: str, what: str) -> Any:
    """A YAML file's content ({} when empty); ConfigError naming `what` when missing or not valid YAML."""
    try:
        with open(path) as f:
            return yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(path, f"{what} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"not valid YAML ({exc})") from None


def build_train_config(overrides: dict[str, Any], config_file: str | None = None) -> TrainConfig:
    """The recipe of the model and task (`recipe`: "paper", the default, or "none"), then the YAML file, then
    explicit CLI values (None means unset). Values that differ from the recipe are recorded in
    `recipe_overrides`; the recipe's model_kwargs sit under the user's."""
    known = {f.name for f in fields(TrainConfig)}
    values: dict[str, Any] = {}
    if config_file:
        loaded = read_yaml(config_file, "config file")
        if not isinstance(loaded, dict):
            raise ConfigError(config_file, "must be a YAML mapping of option: value")
        unknown = set(loaded) - known
        if unknown:
            raise ConfigError(config_file, f"unknown option(s) {sorted(unknown)}; valid: {sorted(known)}")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("recipe", "paper")
    recipe = recipe_for(values.get("model", "attention"), values.get("task", "classification"))
    merged = dict(values)
    if values["recipe"] == "paper" and recipe is not None:
        changed = sorted(k for k, v in values.items() if k in recipe.settings and v != recipe.settings[k])
        changed += sorted(f"model_kwargs.{k}" for k, v in values.get("model_kwargs", {}).items()
                          if k in recipe.model_kwargs and v != recipe.model_kwargs[k])
        merged = {**recipe.settings, **values, "recipe_overrides": tuple(changed),
                  "model_kwargs": {**recipe.model_kwargs, **values.get("model_kwargs", {})}}
    try:
        return TrainConfig(**merged)
    except TypeError as exc:
        raise ConfigError(config_file or "options", str(exc)) from None


def with_overrides(config: TrainConfig, **kw: Any) -> TrainConfig:
    """A copy with some fields changed (used by Tune trials and CV folds)."""
    return replace(config, **kw)
