"""The papers' own training recipes, one per aggregator and task (`slidegrid train --recipe paper`, the default).

A recipe is the set of TrainConfig values a paper states, plus the grid it was made for (mpp and tile size,
checked against the grid metadata: another mpp is a warning naming the paper's, never a refusal). Schedules are
in optimizer steps sized on the paper's cohort (`samples_per_epoch`), not in passes over the cohort at hand:
a 16-slide cohort gets as many updates per epoch as the paper's 270 slides x 9 transforms did, so "x0.1 after
20 of 35 epochs" means what it meant there. Values a paper does not state are marked as ours in `unstated`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RECIPE_NAMES = ("paper", "none")

ATTENTION = "papers/attention-gigapixel-classifier.txt"
NIC = "papers/nic-neural-image-compression.txt"
RAN = "papers/ran-representation-aggregation-networks.txt"


@dataclass(frozen=True)
class Recipe:
    """A paper's training settings for one (model, task)."""

    source: str  # paper and section the values come from
    settings: Mapping[str, Any]  # TrainConfig field -> value
    grid_mpp: float | None = None  # µm/px of the tiles the paper encoded (None: not stated)
    grid_tile: int | None = None  # tile side in px the paper encoded
    unstated: tuple[str, ...] = ()  # settings the paper does not give (ours, recorded as such)
    notes: str = ""
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)


# Attention §III.A: Camelyon16's 270 training WSIs, each augmented by 9 transformations; §III.B: 35 epochs at
# batch 64. Per epoch: 270 x 9 grids -> ceil(2430 / 64) = 38 optimizer steps, 1,330 in all.
_ATTENTION_CLS = Recipe(
    source=f"{ATTENTION} §III.A, §III.B, §III.C",
    settings={"optimizer": "sgd", "lr": 1e-3, "epochs": 35, "lr_step": 20, "lr_gamma": 0.1, "batch_size": 64,
              "samples_per_epoch": 270 * 9, "augment": True, "patience": 0},
    grid_mpp=2.0, grid_tile=224, model_kwargs={"maps": 64},
    notes="SGD 1e-3 x0.1 after 20 of 35 epochs, batch 64, 9 transforms + 4 µm/px copies (§III.A-B); "
          "64 attention maps per set (§III.C)")
# TUPAC16 (§III.A): 492 training cases; MSE + Adam 1e-4, no step decay stated (§III.B).
_ATTENTION_REG = Recipe(
    source=f"{ATTENTION} §III.A, §III.B, §III.C",
    settings={"optimizer": "adam", "lr": 1e-4, "epochs": 35, "lr_step": 0, "batch_size": 64,
              "samples_per_epoch": 492 * 9, "augment": True, "patience": 0},
    grid_mpp=2.0, grid_tile=224, model_kwargs={"maps": 64},
    notes="MSE + Adam 1e-4, 35 epochs at batch 64 (§III.B)")
# NIC §3.2 (crops R x R, 8 dihedral transforms), §4.3 (R = 400, T = 10, P = S = 128, C = 128). The optimizer
# and epochs are in the paper's supplementary material, which we do not have: ours.
_NIC = Recipe(
    source=f"{NIC} §3.2, §4.3",
    settings={"crop": 400, "test_crops": 10, "optimizer": "adam", "lr": 1e-4, "epochs": 50, "lr_step": 0},
    grid_tile=128, unstated=("optimizer", "lr", "epochs"),
    notes="R=400 training crops, T=10 test crops x 8 dihedral transforms (§3.2, §4.3)")
# RAN §4 "Training Details": 28K class-balanced 8x8 2D-grids per epoch; RAN-CNN Adam, batch 64, converged after
# 4 epochs (lr not stated: Adam's default); RAN-LSTM Adam 1e-4, x0.5 every 2 epochs, batch 10, 25 epochs.
_RAN_CNN = Recipe(
    source=f"{RAN} §4 'Model Specification', 'Training Details'",
    settings={"optimizer": "adam", "lr": 1e-3, "epochs": 4, "lr_step": 0, "batch_size": 64, "subgrid": 8,
              "samples_per_epoch": 28_000, "patience": 0},
    grid_tile=224, unstated=("lr",), notes="28K 8x8 sub-grids per epoch, Adam, batch 64, 4 epochs (§4)")
_RAN_LSTM = Recipe(
    source=f"{RAN} §4 'Model Specification', 'Training Details'",
    settings={"optimizer": "adam", "lr": 1e-4, "epochs": 25, "lr_step": 2, "lr_gamma": 0.5, "batch_size": 10,
              "subgrid": 8, "samples_per_epoch": 28_000, "patience": 0},
    grid_tile=224, notes="28K 8x8 sub-grids per epoch, Adam 1e-4 x0.5 every 2 epochs, batch 10, 25 epochs (§4)")

RECIPES: dict[tuple[str, str], Recipe] = {
    ("attention", "classification"): _ATTENTION_CLS,
    ("attention", "regression"): _ATTENTION_REG,
    ("nic-cnn", "classification"): _NIC,
    ("nic-cnn", "regression"): _NIC,
    ("ran-cnn", "segmentation"): _RAN_CNN,
    ("ran-lstm", "segmentation"): _RAN_LSTM,
}


def recipe_for(model: str, task: str) -> Recipe | None:
    """The paper's recipe for a model and task (None where the paper has none: e.g. NIC on segmentation)."""
    return RECIPES.get((model, task))


def steps_per_epoch(samples_per_epoch: int | None, n_train: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps per epoch on each worker: the recipe's samples (slides x transforms, crops or sub-grids)
    per epoch when given, else one sample per training slide, split over `world` DDP workers."""
    samples = samples_per_epoch or n_train
    return max(1, math.ceil(samples / batch_size / world))


def check_grid(recipe: Recipe | None, meta: Mapping[str, Any], model: str) -> str | None:
    """A warning (logged and returned) when a grid was encoded at another mpp or tile size than the recipe's
    paper used; training goes on (grids at 0.5 µm/px from a foundation preset, or PCam's 0.97, still train)."""
    if recipe is None:
        return None
    wrong = []
    mpp, tile = meta.get("target_mpp"), meta.get("tile_size")
    if recipe.grid_mpp and mpp and not math.isclose(float(mpp), recipe.grid_mpp, rel_tol=0.05):
        wrong.append(f"{float(mpp):g} µm/px (the paper: {recipe.grid_mpp:g})")
    if recipe.grid_tile and tile and int(tile) != recipe.grid_tile:
        wrong.append(f"{int(tile)}-px tiles (the paper: {recipe.grid_tile})")
    if not wrong:
        return None
    text = (f"{model}: grids made at {' and '.join(wrong)}; the paper recipe ({recipe.source}) was made for those "
            "settings. Training goes on; re-encode with `slidegrid encode --mpp/--tile-size` to follow it")
    log.warning(text)
    return text
