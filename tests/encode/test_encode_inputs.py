"""Real-input kinds through `encode` (issue 11): what a slide's reading problems do to its grid and manifest row.

The archive links the case inputs of ../shared/data/realworld/cases (never copied into the repository).
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import tifffile

from _cases import case_archive
from conftest import SHARED_DATA
from slidegrid.encode import EncodeConfig, run_encode
from slidegrid.geometry.tiling import GridSpec
from slidegrid.io.grids import grid_uri, read_grid

CASES = SHARED_DATA / "realworld" / "cases"
LINKS = {"ycc": "aperio_jp2k_33003_ycbcr.svs", "rgb": "aperio_jp2k_33005_rgb.svs",
         "corrupt": "corrupt_mid_tiles.tif", "clean": "clean.tif", "nonsquare": "nonsquare_0.25x0.5.tif",
         "rgba": "rgba_roi.tif", "nonascii": "kfbio_nonascii.svs", "gray": "gray8_brightfield.tif"}


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("inputs")
    archive = case_archive(root, LINKS, CASES)
    out = root / "grids"
    config = EncodeConfig(input=str(archive), out=str(out), encoder="mean-rgb", dtype="float32",
                          progress=False, mlflow=False, grid=GridSpec(mpp=1.0, tile_size=128, min_tissue=0.0))
    # min_tissue 0: every tile is read, so the damaged tile is reached and the small discs of the non-square
    # case (each under the tissue mask's smallest object) still give a grid
    return out, {r.slide_id: r for r in run_encode(config).results}


def test_one_damaged_tile_fails_its_slide_by_position_and_the_archive_finishes(encoded):
    out, results = encoded
    assert results["corrupt"].status == "failed"
    assert "damaged tile at level-0 (1280, 768)" in results["corrupt"].error
    assert not os.path.exists(grid_uri(str(out), "corrupt"))
    assert all(results[s].status == "ok" for s in ("ycc", "rgb", "clean", "nonsquare", "rgba", "nonascii"))
    for sid in ("ycc", "rgb", "clean", "nonsquare", "rgba", "nonascii"):
        grid = read_grid(grid_uri(str(out), sid))
        assert np.isfinite(grid.embedding).all() and grid.meta["reader"] == "tiffslide"


def test_jpeg2000_ycbcr_slide_gets_the_grid_of_its_rgb_twin(encoded):
    out, _ = encoded
    a, b = read_grid(grid_uri(str(out), "ycc")), read_grid(grid_uri(str(out), "rgb"))
    assert (a.x.tolist(), a.y.tolist()) == (b.x.tolist(), b.y.tolist())
    assert np.abs(a.embedding - b.embedding).mean() < 3 / 255 * 4  # mean RGB per tile, lossy twins


def test_non_square_pixels_give_tiles_square_in_micrometres(encoded):
    out, _ = encoded
    g = read_grid(grid_uri(str(out), "nonsquare"))
    assert (g.meta["slide_mpp_x"], g.meta["slide_mpp_y"]) == (0.25, 0.5)
    assert set(np.diff(sorted(set(g.x.tolist())))) == {512} and set(np.diff(sorted(set(g.y.tolist())))) == {256}


def test_pixel_size_source_and_refusals_reach_the_manifest(encoded):
    out, results = encoded
    assert read_grid(grid_uri(str(out), "nonascii")).meta["mpp_source"] == "metadata:aperio"
    assert results["gray"].status == "failed" and "not a brightfield RGB slide" in results["gray"].error


def test_transparent_frame_is_background_not_black_tiles(encoded):
    out, _ = encoded
    g = read_grid(grid_uri(str(out), "rgba"))
    rgba = tifffile.imread(glob.glob(str(CASES / "*" / LINKS["rgba"]))[0]).astype(np.float64)
    a = rgba[..., 3:] / 255
    on_white = rgba[..., :3] * a + 255 * (1 - a)
    edge = [k for k in range(len(g.x)) if (rgba[g.y[k]:g.y[k] + 256, g.x[k]:g.x[k] + 256, 3] == 0).any()]
    assert edge  # tiles that touch the transparent frame were kept and encoded
    for k in edge:
        truth = on_white[g.y[k]:g.y[k] + 256, g.x[k]:g.x[k] + 256].reshape(-1, 3).mean(0) / 255
        assert np.abs(g.embedding[k] - truth).max() < 2 / 255
