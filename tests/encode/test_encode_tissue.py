"""Pen ink, blank glass and faint tissue through `encode` (issue 11, item 5): what the tissue mask does to grids.

The archive links the case inputs of ../shared/data/realworld/cases/15-tissue-pen-faint-blank (never copied into the
repository); the ink and tissue boxes are those of tests/geometry/test_tissue.py, in 8 µm/px mask pixels (rows, cols).
"""

from __future__ import annotations

import numpy as np
import pytest

from _cases import case_archive
from _pen_cases import PEN, PEN_CASES
from slidegrid.encode import EncodeConfig, run_encode
from slidegrid.geometry.tiling import GridSpec
from slidegrid.io.grids import grid_uri, read_grid

LINKS = {"red": "pen_red_on_tissue.tif", "green": "pen_green_on_tissue.tif", "blue": "wsi_blue_pen.tif",
         "mosaic": "tile_mosaic.tif", "blank": "blank_glass.tif", "faint": "faint_tissue.tif"}
# Tiles of 128 px at 1 µm/px on these 0.5 µm/px slides: 256 level-0 px, 16 pixels of the 8 µm/px mask, on a side.
TILE_PX0, MASK_PX0 = 256, 16


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("ink")
    archive = case_archive(root, LINKS, PEN)
    out = root / "grids"
    config = EncodeConfig(input=str(archive), out=str(out), encoder="mean-rgb", dtype="float32", progress=False,
                          mlflow=False, grid=GridSpec(mpp=1.0, tile_size=128))  # default --min-tissue 0.25
    return out, {r.slide_id: r for r in run_encode(config).results}


def test_glass_and_a_tile_of_pure_ink_give_no_grid(encoded):
    _, results = encoded
    # tile_mosaic: green pen, a marker line and near-white glass; today its green-ink tile is encoded as tissue
    assert results["blank"].status == "skipped_no_tissue"
    assert results["mosaic"].status == "skipped_no_tissue"


@pytest.mark.parametrize("kind", ["red", "green", "blue"])
def test_no_tile_is_centred_on_ink_and_the_tissue_beside_it_is_tiled(encoded, kind):
    out, results = encoded
    assert results[kind].status == "ok"
    grid = read_grid(grid_uri(str(out), kind))
    _, ink_boxes, tissue_boxes, _ = PEN_CASES[kind]
    centre_r, centre_c = (grid.y + TILE_PX0 / 2) / MASK_PX0, (grid.x + TILE_PX0 / 2) / MASK_PX0

    def inside(box: tuple[slice, slice]) -> np.ndarray:
        return ((centre_r >= box[0].start) & (centre_r < box[0].stop) & (centre_c >= box[1].start)
                & (centre_c < box[1].stop))

    for box in ink_boxes:
        assert not inside(box).any()
    # tile centres lie every 16 mask px from (8, 8): each tissue box holds at least one
    assert all(inside(box).any() for box in tissue_boxes)


def test_faint_tissue_is_tiled(encoded):
    out, results = encoded
    assert results["faint"].status == "ok"
    grid = read_grid(grid_uri(str(out), "faint"))
    truth = np.load(PEN / "faint_tissue_mask.npy")
    assert grid.meta["tissue_fraction"] == pytest.approx(truth.mean(), abs=0.06)  # found 0.249, true 0.297
    side = TILE_PX0 // MASK_PX0
    true_share = [truth[y // MASK_PX0:y // MASK_PX0 + side, x // MASK_PX0:x // MASK_PX0 + side].mean()
                  for x, y in zip(grid.x, grid.y)]
    assert len(true_share) >= 0.9 * truth.sum() / side**2  # the true tissue holds 28.5 tiles' worth
    assert min(true_share) >= 0.25  # each kept tile passes --min-tissue on the truth too
