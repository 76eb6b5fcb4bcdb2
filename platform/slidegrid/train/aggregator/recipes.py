"""The papers' own training recipes (`slidegrid train --recipe paper`, the default): each aggregator declares
its recipes per task on its model card (models/registry.Recipe, next to the model's class); this module reads
them and sizes their schedules.

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...models.registry import Recipe

log = logging.getLogger(__name__)

RECIPE_NAMES = ("paper", "none")


def recipe_for(model: str, task: str) -> Recipe | None:
    """The paper's recipe for a model and task, from its model card (None where the paper has none: e.g. NIC on
    segmentation)."""
    from ...models import model_card, registered

    return model_card(model).recipes.get(task) if model in registered("aggregator") else None


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
