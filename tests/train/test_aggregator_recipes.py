"""The papers' training recipes: the values each paper states, how they meet user options, and the attention
paper's grid augmentation."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from slidegrid.train.aggregator.augment import SLIDE_TRANSFORMS, paper_augment, pool_2x2, transform_grid
from slidegrid.train.aggregator.config import TrainConfig, build_train_config
from slidegrid.train.aggregator.recipes import check_grid, recipe_for, steps_per_epoch

BASE = {"grids": "g", "cohort": "c", "out": "o"}


@pytest.mark.parametrize("model,task,expected,section", [
    # attention-gigapixel-classifier §III.B: SGD 1e-3, x0.1 after 20 epochs, 35 epochs, batch 64 (Camelyon16).
    ("attention", "classification", {"optimizer": "sgd", "lr": 1e-3, "lr_step": 20, "lr_gamma": 0.1, "epochs": 35,
                                     "batch_size": 64, "augment": True}, "§III.B"),
    # §III.B: TUPAC16 regression, MSE + Adam 1e-4, no step decay.
    ("attention", "regression", {"optimizer": "adam", "lr": 1e-4, "lr_step": 0, "epochs": 35, "batch_size": 64},
     "§III.B"),
    # nic-neural-image-compression §4.3: R = 400, T = 10.
    ("nic-cnn", "classification", {"crop": 400, "test_crops": 10}, "§4.3"),
    # ran-representation-aggregation-networks §4 "Training Details": RAN-CNN Adam, batch 64, 4 epochs.
    ("ran-cnn", "segmentation", {"optimizer": "adam", "batch_size": 64, "epochs": 4, "subgrid": 8}, "§4"),
    # §4: RAN-LSTM Adam 1e-4, decay 0.5 every 2 epochs, batch 10, 25 epochs; 8 x 8 2D-grids.
    ("ran-lstm", "segmentation", {"optimizer": "adam", "lr": 1e-4, "lr_step": 2, "lr_gamma": 0.5, "batch_size": 10,
                                  "epochs": 25, "subgrid": 8}, "§4"),
])
def test_each_recipe_is_what_the_paper_states(model, task, expected, section):
    recipe = recipe_for(model, task)
    assert section in recipe.source
    cfg = build_train_config({**BASE, "model": model, "task": task})
    assert cfg.recipe == "paper" and cfg.recipe_overrides == ()
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_every_aggregator_card_carries_a_recipe_for_what_it_predicts():
    """Recipes sit on the model cards (next to each class): a new aggregator registers its own, and every
    setting a recipe names is a TrainConfig field."""
    from dataclasses import fields

    from slidegrid.models import model_card, registered

    known = {f.name for f in fields(TrainConfig)}
    for name in registered("aggregator"):
        card = model_card(name)
        assert ("segmentation" in card.recipes) == card.per_cell, name
        for task, recipe in card.recipes.items():
            assert recipe_for(name, task) is recipe and set(recipe.settings) <= known, (name, task)
    # Segmentation members carry theirs too; train-seg reads them from the cards.
    from slidegrid.models.registry import SegRecipe
    from slidegrid.train.segmentation.config import MEMBERS, SEG_RECIPES

    assert set(MEMBERS) == set(registered("segmentation"))
    for name in registered("segmentation"):
        recipe = model_card(name).recipes["segmentation"]
        assert isinstance(recipe, SegRecipe) and SEG_RECIPES[name] is recipe and "papers/" in recipe.source


def test_recipe_grids_and_budgets_follow_the_papers():
    attention = recipe_for("attention", "classification")
    # §III.A: WSIs processed at 2 µm/px in 224 x 224 patches; §III.C: 64 attention filters per set.
    assert (attention.grid_mpp, attention.grid_tile) == (2.0, 224)
    assert build_train_config(BASE).model_kwargs == {"maps": 64}
    # 270 Camelyon16 training WSIs x 9 transformations at batch 64: 38 steps per epoch, whatever the cohort size.
    assert attention.settings["samples_per_epoch"] == 270 * 9
    assert steps_per_epoch(2430, n_train=12, batch_size=64) == 38
    assert steps_per_epoch(2430, n_train=12, batch_size=64, world=2) == 19
    assert steps_per_epoch(None, n_train=12, batch_size=4) == 3  # no recipe: one pass over the slides
    # RAN §4: 28K class-balanced 2D-grids per epoch; NIC §4.3: P = 128.
    assert recipe_for("ran-lstm", "segmentation").settings["samples_per_epoch"] == 28_000
    assert recipe_for("nic-cnn", "classification").grid_tile == 128
    assert set(recipe_for("nic-cnn", "classification").unstated) == {"optimizer", "lr", "epochs"}


def test_user_options_win_over_the_recipe_and_are_recorded():
    cfg = build_train_config({**BASE, "lr": 0.01, "epochs": 35, "model_kwargs": {"maps": 8}})
    assert (cfg.lr, cfg.optimizer, cfg.model_kwargs["maps"]) == (0.01, "sgd", 8)
    # epochs equal to the paper's is not a change; lr and maps are.
    assert cfg.recipe_overrides == ("lr", "model_kwargs.maps")
    generic = build_train_config({**BASE, "recipe": "none"})
    assert generic == TrainConfig(grids=generic.grids, cohort=generic.cohort, out=generic.out)


def test_a_grid_at_another_mpp_is_a_warning_naming_the_papers(caplog):
    recipe = recipe_for("attention", "classification")
    assert check_grid(recipe, {"target_mpp": 2.0, "tile_size": 224}, "attention") is None
    with caplog.at_level(logging.WARNING):
        text = check_grid(recipe, {"target_mpp": 0.5, "tile_size": 224}, "attention")
    assert "0.5 µm/px (the paper: 2)" in text and "§III" in text and text in caplog.text
    assert "(the paper: 224)" in check_grid(recipe, {"target_mpp": 2.0, "tile_size": 256}, "attention")


def _grid():
    dense = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    mask = np.ones((3, 4), bool)
    mask[0, 0] = False
    return dense * mask, mask


def test_grid_transforms_are_the_papers_nine():
    dense, mask = _grid()
    assert len(SLIDE_TRANSFORMS) == 10 and SLIDE_TRANSFORMS[0] == "identity"
    d, m = transform_grid(dense, mask, SLIDE_TRANSFORMS.index("flip-h"))
    assert np.array_equal(d[:, :, 0], dense[:, :, -1]) and not m[0, -1]
    d, m = transform_grid(dense, mask, SLIDE_TRANSFORMS.index("rot90"))  # clockwise: the first row becomes the last column
    assert d.shape == (2, 4, 3) and np.array_equal(d[:, :, -1], dense[:, 0, :]) and not m[0, -1]
    d, m = transform_grid(dense, mask, SLIDE_TRANSFORMS.index("rot270"))
    assert np.array_equal(d[:, -1, :], dense[:, :, 0])
    d, m = transform_grid(dense, mask, SLIDE_TRANSFORMS.index("shift-right"))
    assert d.shape == dense.shape and not m[:, 0].any() and np.array_equal(d[:, :, 1:], dense[:, :, :-1])
    d, m = transform_grid(dense, mask, SLIDE_TRANSFORMS.index("shift-up"))
    assert not m[-1].any() and np.array_equal(d[:, :-1], dense[:, 1:])


def test_pooling_averages_only_kept_cells():
    dense, mask = _grid()
    d, m = pool_2x2(dense, mask)
    assert d.shape == (2, 2, 2) and m.all()
    # Block (0, 0) holds cells (0,1), (1,0), (1,1) of channel 0: 1, 4, 5 (cell (0,0) is not tissue).
    assert d[0, 0, 0] == pytest.approx((1 + 4 + 5) / 3)
    # Odd height: the last block row has one row of cells.
    assert d[0, 1, 1] == pytest.approx((10 + 11) / 2) and d[1, 1, 1] == pytest.approx((22 + 23) / 2)
    empty = np.zeros((2, 2), bool)
    assert not pool_2x2(np.ones((1, 2, 2), np.float32), empty)[1].any()


def test_augmentation_draws_every_transform_at_both_resolutions():
    dense, mask = _grid()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        d, m = paper_augment(dense, mask, rng)
        seen.add((d.shape, round(float(d.sum()), 3)))
    # 10 transforms x 2 scales; rotations change the shape, shifts drop cells, pooling halves the grid.
    shapes = {s for s, _ in seen}
    assert {(2, 3, 4), (2, 4, 3), (2, 2, 2)} <= shapes and len(seen) >= 8
