"""Tile grids (geometry, tissue fractions), MRN concentric tiles, perturbation, balanced patch sampling and
`slidegrid tiles`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slidegrid.cli import main
from slidegrid.errors import ConfigError
from slidegrid.geometry.tiling import (
    GridSpec,
    concentric_tiles,
    perturb,
    read_concentric,
    sample_patches,
    tile_grid,
)
from slidegrid.geometry.tissue import TissueMask, tissue_mask
from slidegrid.io.slides import open_slide
from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiling") / "t.tiff"
    truth = write_synthetic_slide(str(path), SyntheticSpec(width=2048, height=1536, seed=5, n_tumours=1))
    return str(path), truth


def _level0(mask: np.ndarray, px: int, py: int | None = None) -> np.ndarray:
    """The mask blown up to level 0 when one mask pixel is `px` x `py` level-0 pixels (brute-force checks)."""
    return np.kron(mask, np.ones((py or px, px), bool))


def _brute(big: np.ndarray, x: np.ndarray, y: np.ndarray, w: int, h: int) -> np.ndarray:
    """Tissue fraction of w x h level-0 boxes over a level-0 mask, outside it counting as no tissue."""
    padded = np.pad(big, ((0, h), (0, w)))
    return np.array([padded[yi:yi + h, xi:xi + w].mean() for xi, yi in zip(x, y)])


def test_real_sample_tiles_lie_on_tissue(sample_slide):
    with open_slide(str(sample_slide)) as s:
        mask = tissue_mask(s)
        grid = tile_grid(s.info.dimensions, s.mpp, GridSpec(mpp=0.5, tile_size=224), mask)
        W, H = s.info.dimensions
    size0, step0 = grid.tile_size_level0[0], 224 * 0.5 / s.mpp
    assert len(grid) > 0 and (grid.tissue >= 0.25).all()
    assert (grid.x >= 0).all() and (grid.y >= 0).all()
    # every tile starts inside the slide; only the last column / row may run past its edge (padded)
    assert (grid.x < W).all() and (grid.y < H).all()
    rows, cols = grid.shape
    assert (grid.x[grid.col < cols - 1] + size0 <= W).all() and (grid.y[grid.row < rows - 1] + size0 <= H).all()
    for n, extent in ((cols, W), (rows, H)):
        # no column short of the edge is missing (the next would be under a quarter inside) and none is extra
        assert round((n - 1) * step0) + size0 >= extent or extent - round(n * step0) < 0.25 * size0
        assert round((n - 2) * step0) + size0 < extent
    # Kept tiles cover much more tissue than the slide as a whole, and no kept tile is pure glass.
    assert grid.tissue.mean() > 2 * mask.fraction or grid.tissue.mean() > 0.8
    f = s.mpp / mask.mpp
    for x, y, t in zip(grid.x, grid.y, grid.tissue):
        footprint = mask.mask[int(y * f):int(np.ceil((y + size0) * f)), int(x * f):int(np.ceil((x + size0) * f))]
        # over the whole tile, the part beyond the slide counting as glass; partial mask pixels differ a little
        assert footprint.any() and abs(footprint.sum() / (size0 * f) ** 2 - t) < 0.35


def test_grid_maps_row_col_to_level0_exactly():
    spec = GridSpec(mpp=0.5, tile_size=224, stride=100, min_tissue=0.0)
    slide_mpp = 0.499  # a real scanner's mpp: tiles are 224.45 level-0 px, steps 100.2
    grid = tile_grid((1000, 700), slide_mpp, spec)
    size0 = grid.tile_size_level0[0]
    np.testing.assert_array_equal(grid.x, np.round(grid.col * 100 * 0.5 / slide_mpp).astype(np.int64))
    np.testing.assert_array_equal(grid.y, np.round(grid.row * 100 * 0.5 / slide_mpp).astype(np.int64))
    # 8 complete columns (starts 0..701) and a 9th at 802 that runs past x = 1000: the complete ones end at
    # 925.5, so without it the strip 925..1000 would never be looked at; a 10th (at 902) would be redundant
    assert grid.shape == (6, 9) and len(grid) == 54
    assert sorted(set(grid.x.tolist())) == [0, 100, 200, 301, 401, 501, 601, 701, 802]
    assert sorted(set(grid.y.tolist())) == [0, 100, 200, 301, 401, 501]
    assert 701 + size0 < 1000 < 802 + size0 and 401 + size0 < 700 < 501 + size0
    # row-major from the top-left
    assert list(zip(grid.row[:3], grid.col[:3])) == [(0, 0), (0, 1), (0, 2)] and grid.row[9] == 1
    assert grid.row.dtype == np.int32 and grid.x.dtype == np.int64 and grid.tissue.dtype == np.float32


def test_without_a_mask_every_tile_is_kept():
    grid = tile_grid((1024, 512), 0.25, GridSpec(mpp=1.0, tile_size=64))
    assert grid.shape == (2, 4) and len(grid) == 8 and (grid.tissue == 1.0).all()
    assert grid.tile_size_level0 == (256, 256) and sorted(set(grid.x.tolist())) == [0, 256, 512, 768]


def test_tissue_fraction_is_the_covered_area():
    rng = np.random.default_rng(3)
    mask = rng.random((40, 50)) > 0.6  # 4 µm/px over a 1 µm/px slide of 200 x 160 px
    spec = GridSpec(mpp=1.0, tile_size=10, stride=7, min_tissue=0.0)  # tiles straddle mask pixels
    grid = tile_grid((200, 160), 1.0, spec, TissueMask(mask, 4.0))
    # whole tiles end at x = 199 and y = 157: a 29th column (at 196) and a 23rd row (at 154) run past the edge
    assert grid.shape == (23, 29) and grid.x.max() == 196 and grid.y.max() == 154
    brute = _brute(_level0(mask, 4), grid.x, grid.y, 10, 10)
    np.testing.assert_allclose(grid.tissue, brute, atol=1e-5)
    kept = tile_grid((200, 160), 1.0, GridSpec(mpp=1.0, tile_size=10, stride=7, min_tissue=0.5),
                     TissueMask(mask, 4.0))
    assert len(kept) == (brute >= 0.5).sum() and (kept.tissue >= 0.5).all()


def test_non_square_pixels_give_tiles_square_in_um():
    # cases/03-non-square-pixels: 2000 x 1000 px at 0.25 µm/px along x and 0.5 along y, --mpp 1 --tile-size 224
    grid = tile_grid((2000, 1000), (0.25, 0.5), GridSpec(mpp=1.0, tile_size=224))
    assert grid.shape == (2, 2) and len(grid) == 4 and grid.tile_size_level0 == (896, 448)
    assert grid.x.tolist() == [0, 896, 0, 896] and grid.y.tolist() == [0, 0, 448, 448]
    # The strips beyond (x 1792..2000, y 896..1000) are 208/896 = 104/448 = 23 % of a tile: under the default
    # --min-tissue no tile there could be kept, so they are not grid cells; at 0.2 they are.
    low = tile_grid((2000, 1000), (0.25, 0.5), GridSpec(mpp=1.0, tile_size=224, min_tissue=0.2))
    assert low.shape == (3, 3) and sorted(set(low.x.tolist())) == [0, 896, 1792]
    assert sorted(set(low.y.tolist())) == [0, 448, 896] and len(low) == 8  # the corner is 5 % inside
    assert low.tissue[(low.row == 0) & (low.col == 2)][0] == pytest.approx(208 / 896)
    meta = json.loads(grid.to_table().schema.metadata[b"slidegrid"])
    assert (meta["slide_mpp"], meta["slide_mpp_x"], meta["slide_mpp_y"]) == (0.25, 0.25, 0.5)
    assert meta["slide_dimensions"] == [2000, 1000] and meta["grid_shape"] == [2, 2]
    # the same physical layout with square pixels gives the same grid in µm
    square = tile_grid((2000, 2000), 0.25, GridSpec(mpp=1.0, tile_size=224))
    assert square.shape == (2, 2) and square.y.tolist() == [0, 0, 896, 896]


def test_non_square_tissue_fraction_is_the_covered_area():
    rng = np.random.default_rng(11)
    mask = rng.random((50, 60)) > 0.5  # 4 µm/px over 240 x 200 µm: 960 x 400 px at 0.25 x 0.5 µm/px
    spec = GridSpec(mpp=1.0, tile_size=14, stride=9, min_tissue=0.0)  # 56 x 28 level-0 px, steps 36 x 18
    grid = tile_grid((960, 400), (0.25, 0.5), spec, TissueMask(mask, 4.0))
    # 26 whole columns end at x = 956 and a 27th covers the rest; 21 whole rows end at y = 388 and a 22nd
    assert grid.tile_size_level0 == (56, 28) and grid.shape == (22, 27)
    np.testing.assert_array_equal(grid.x, grid.col.astype(np.int64) * 36)
    np.testing.assert_array_equal(grid.y, grid.row.astype(np.int64) * 18)
    brute = _brute(_level0(mask, 16, 8), grid.x, grid.y, 56, 28)  # one mask px = 16 x 8 level-0 px
    np.testing.assert_allclose(grid.tissue, brute, atol=1e-5)


def test_tissue_beyond_the_last_whole_tile_is_kept():
    # 1000 x 700 px at 1 µm/px, 224-px tiles: whole columns end at x = 896 and whole rows at y = 672
    spec = GridSpec(mpp=1.0, tile_size=224)
    strip = np.zeros((175, 250), bool)  # 4 µm/px
    strip[:, 225:] = True  # tissue only at x 900..1000, where no whole tile reaches
    grid = tile_grid((1000, 700), 1.0, spec, TissueMask(strip, 4.0))
    # the 5th column is 104/224 inside the slide; a 4th row would be only 28/224 inside: never kept
    assert grid.shape == (3, 5) and grid.col.tolist() == [4, 4, 4] and grid.x.tolist() == [896] * 3
    np.testing.assert_allclose(grid.tissue, 100 / 224, rtol=1e-6)  # over the whole tile: outside is glass
    thin = strip.copy()
    thin[:, :240] = False  # 40 px of tissue: 18 % of the edge tile, under --min-tissue
    assert len(tile_grid((1000, 700), 1.0, spec, TissueMask(thin, 4.0))) == 0
    # a mask one pixel larger than the slide (thumbnail rounding) is cut at the slide's edge
    over = np.ones((176, 251), bool)
    edge = tile_grid((1000, 700), 1.0, spec, TissueMask(over, 4.0))
    np.testing.assert_allclose(edge.tissue[edge.col == 4], 104 / 224, rtol=1e-6)
    np.testing.assert_allclose(edge.tissue[edge.col < 4], 1.0, rtol=1e-6)


def test_overlapping_grid_on_a_hand_made_mask():
    spec = GridSpec(mpp=1.0, tile_size=100, stride=50, min_tissue=0.5)
    mask = np.zeros((100, 100), bool)
    mask[:, :50] = True  # left half is tissue; 4 µm/px over a 400 µm slide at 0.25 µm/px (1600 px)
    grid = tile_grid((1600, 1600), 0.25, spec, TissueMask(mask, 4.0))
    assert grid.shape == (7, 7)  # (400 µm - 100 µm) / 50 µm + 1
    np.testing.assert_array_equal(grid.x, grid.col.astype(np.int64) * 200)
    np.testing.assert_array_equal(grid.y, grid.row.astype(np.int64) * 200)
    # columns 0-2 lie in the left half (fraction 1), column 3 straddles it (0.5, kept at the threshold)
    assert sorted(set(grid.col.tolist())) == [0, 1, 2, 3] and len(grid) == 28
    assert np.allclose(grid.tissue[grid.col == 3], 0.5) and np.allclose(grid.tissue[grid.col < 3], 1.0)


def test_slide_smaller_than_a_tile_is_one_padded_tile():
    # 200 x 200 px of tissue in a 224-px tile: 80 % of it, kept as one padded tile
    tiny = tile_grid((200, 200), 0.5, GridSpec(mpp=0.5, tile_size=224), TissueMask(np.ones((13, 13), bool), 8.0))
    assert tiny.shape == (1, 1) and len(tiny) == 1 and (tiny.x[0], tiny.y[0]) == (0, 0) and tiny.smaller_than_tile
    assert tiny.tissue[0] == pytest.approx(200 * 200 / 224**2, rel=1e-5)
    # 16 x 16 px is 0.5 % of a tile: a cell only when --min-tissue allows that little, kept then with that fraction
    full = TissueMask(np.ones((1, 1), bool), 8.0)
    speck = tile_grid((16, 16), 0.5, GridSpec(mpp=0.5, tile_size=224, min_tissue=0), full)
    assert speck.shape == (1, 1) and speck.tissue[0] == pytest.approx(16 * 16 / 224**2, rel=1e-5)
    empty = tile_grid((16, 16), 0.5, GridSpec(mpp=0.5, tile_size=224), full)
    assert len(empty) == 0 and empty.shape == (0, 0)
    status, why = empty.empty_reason()
    assert status == "smaller_than_tile" and "(16x16 px)" in why and "224x224 level-0 px" in why
    table = empty.to_table()
    assert table.num_rows == 0 and table.column_names == ["row", "col", "x", "y", "tissue"]
    # narrower than a tile along one axis only is smaller than a tile too; a slide that holds a whole tile and
    # keeps none has no tissue
    assert tile_grid((5000, 100), 0.5, GridSpec(tile_size=224), full).empty_reason()[0] == "smaller_than_tile"
    # rows 100/224 inside can never reach --min-tissue 0.5: no cell at all, not a (0, 23) grid
    strip = tile_grid((5000, 100), 0.5, GridSpec(tile_size=224, min_tissue=0.5), full)
    assert strip.shape == (0, 0) and strip.empty_reason()[0] == "smaller_than_tile"
    glass = tile_grid((448, 448), 0.5, GridSpec(tile_size=224), TissueMask(np.zeros((28, 28), bool), 8.0))
    assert glass.shape == (2, 2) and glass.empty_reason() == ("skipped_no_tissue", "")


def test_small_svs_gives_padded_tiles(edge_dir):
    with open_slide(str(edge_dir / "small.svs")) as s:
        assert s.info.dimensions == (16, 16)
        for size, n in ((224, 1), (16, 1), (8, 4), (5, 16)):
            grid = tile_grid(s.info.dimensions, s.mpp, GridSpec(mpp=s.mpp, tile_size=size, min_tissue=0),
                             tissue_mask(s))
            assert grid.shape[0] * grid.shape[1] == len(grid) == n and (grid.x < 16).all() and (grid.y < 16).all()


def test_blank_slide_gives_no_tiles(tmp_path):
    path = tmp_path / "glass.tiff"
    write_synthetic_slide(str(path), SyntheticSpec(width=1024, height=1024, blank=True))
    with open_slide(str(path)) as s:
        grid = tile_grid(s.info.dimensions, s.mpp, GridSpec(tile_size=128), tissue_mask(s))
    assert grid.shape == (8, 8) and len(grid) == 0


@pytest.mark.parametrize("kwargs, where", [({"min_tissue": 2}, "--min-tissue"), ({"tile_size": 0}, "--tile-size"),
                                           ({"stride": 0}, "--stride"), ({"mpp": 0}, "--mpp")])
def test_grid_spec_is_validated(kwargs, where):
    with pytest.raises(ConfigError) as err:
        GridSpec(**kwargs)
    assert err.value.input == where
    assert GridSpec(tile_size=64).step == 64 and GridSpec(tile_size=64, stride=32).step == 32


def test_table_schema_and_metadata():
    grid = tile_grid((1000, 800), 0.5, GridSpec(mpp=1.0, tile_size=100, stride=80))
    table = grid.to_table(source_uri="s3://bucket/a.svs")
    assert table.schema.field("row").type == pa.int32() and table.schema.field("col").type == pa.int32()
    assert table.schema.field("x").type == pa.int64() and table.schema.field("y").type == pa.int64()
    assert table.schema.field("tissue").type == pa.float32() and table.num_rows == len(grid)
    meta = json.loads(table.schema.metadata[b"slidegrid"])
    assert meta["source_uri"] == "s3://bucket/a.svs" and meta["slide_mpp"] == 0.5 and meta["target_mpp"] == 1.0
    assert meta["slide_mpp_x"] == meta["slide_mpp_y"] == 0.5 and meta["slide_dimensions"] == [1000, 800]
    assert meta["tile_size"] == 100 and meta["stride"] == 80 and meta["grid_shape"] == list(grid.shape) == [5, 6]


def test_concentric_tiles_share_a_centre(synth):
    path, _ = synth
    tiles = concentric_tiles(1000, 700, [0.5, 1, 2, 4], 256, 0.5)
    assert [m for _, _, m in tiles] == [0.5, 1.0, 2.0, 4.0]
    for x, y, mpp in tiles:
        half = 256 * mpp / 0.5 / 2
        assert (x + half, y + half) == (1000, 700)
    with open_slide(path) as s:
        stack = read_concentric(s, 1000, 700, [0.5, 1, 2], 64)
    assert stack.shape == (3, 64, 64, 3) and stack.dtype == np.uint8
    # the centre half of each coarser tile is the finer tile at half the resolution: same place
    import cv2

    for fine, coarse in zip(stack[:-1], stack[1:]):
        down = cv2.resize(fine, (32, 32), interpolation=cv2.INTER_AREA).astype(float)
        assert np.abs(down - coarse[16:48, 16:48]).mean() < 12
        assert np.abs(down - coarse[:32, :32]).mean() > np.abs(down - coarse[16:48, 16:48]).mean()


def test_perturbation_is_uniform_within_the_radius():
    rng = np.random.default_rng(0)
    x, y = perturb(np.full(20000, 1000), np.full(20000, 500), 128, rng)
    d = np.hypot(x - 1000, y - 500)
    assert x.dtype == np.int64 and d.max() <= 128 + 1  # +1: rounding to whole pixels
    assert np.mean(d < 64) == pytest.approx(0.25, abs=0.02)  # uniform over the disc's area
    assert abs(np.mean(x - 1000)) < 2 and abs(np.mean(y - 500)) < 2


def _touches(label: np.ndarray, px: int, x: np.ndarray, y: np.ndarray, size0: int) -> np.ndarray:
    big = _level0(label, px)
    return np.array([big[yi:yi + size0, xi:xi + size0].any() for xi, yi in zip(x, y)])


def test_sample_patches_balance_and_any_pixel_rule():
    label = np.zeros((100, 100), bool)
    label[50, 50] = True  # a single tumour pixel (8 µm/px) on a 0.5 µm/px slide: 16 level-0 px per mask px
    tissue = TissueMask(np.ones((50, 50), bool), 16.0)
    x, y, pos = sample_patches(label, 8.0, tissue, 0.5, (1600, 1600), 400, 40, 0.5, np.random.default_rng(1))
    assert pos.sum() == 200 and (~pos).sum() == 200 and pos[:200].all()
    assert x.dtype == np.int64 and ((x >= 0) & (x <= 1600 - 40) & (y >= 0) & (y <= 1600 - 40)).all()
    np.testing.assert_array_equal(_touches(label, 16, x, y, 40), pos)  # exact: any pixel inside the patch
    # tumour patches are not all alike: they start all around the tumour pixel
    assert len(set(zip(x[pos].tolist(), y[pos].tolist()))) > 100 and x[pos].min() <= 800 - 40 + 16


def test_sample_patches_are_exact_on_random_layouts():
    rng = np.random.default_rng(7)
    for _ in range(10):
        label = np.zeros((30, 40), bool)
        for _ in range(3):
            r, c = rng.integers(0, 30), rng.integers(0, 40)
            label[r:r + 3, c:c + 2] = True
        tissue = TissueMask(rng.random((30, 40)) > 0.2, 8.0)
        x, y, pos = sample_patches(label, 8.0, tissue, 1.0, (320, 240), 60, 20, 1.0, rng, positive_fraction=0.3)
        assert pos.sum() == 18 and (~pos).sum() == 42
        np.testing.assert_array_equal(_touches(label, 8, x, y, 20), pos)
        # negatives are centred on tissue
        assert tissue.mask[(y[~pos] + 10) // 8, (x[~pos] + 10) // 8].all()


def test_sample_patches_without_tumour_are_all_negatives_on_tissue():
    tissue_px = np.zeros((100, 100), bool)
    tissue_px[20:40, 60:90] = True
    tissue = TissueMask(tissue_px, 8.0)
    x, y, pos = sample_patches(np.zeros((100, 100), bool), 8.0, tissue, 0.5, (1600, 1600), 50, 64, 0.5,
                               np.random.default_rng(0))
    assert len(x) == 50 and not pos.any()
    cx, cy = (x + 32) // 16, (y + 32) // 16
    assert tissue_px[cy, cx].all()


def test_sample_patches_on_a_synthetic_slide(synth):
    _, truth = synth
    tissue_px, tumour_px = truth.masks(8.0)
    x, y, pos = sample_patches(tumour_px, 8.0, TissueMask(tissue_px, 8.0), truth.mpp, truth.dimensions, 100, 224,
                               0.5, np.random.default_rng(2))
    assert pos.sum() == 50 and (~pos).sum() == 50
    np.testing.assert_array_equal(_touches(tumour_px, 16, x, y, 224), pos)


def test_sample_patches_when_nothing_fits():
    label = np.ones((4, 4), bool)
    x, y, pos = sample_patches(label, 8.0, TissueMask(label, 8.0), 0.5, (64, 64), 10, 224, 0.5,
                               np.random.default_rng(0))
    assert len(x) == len(y) == len(pos) == 0


def test_cli_tiles_writes_the_grid_as_parquet(synth, tmp_path, capsys):
    path, _ = synth
    out = tmp_path / "grids" / "t.parquet"
    assert main(["tiles", path, "--mpp", "1.0", "--tile-size", "128", "--stride", "64", "--min-tissue", "0.5",
                 "--out", str(out)]) == 0
    with open_slide(path) as s:
        expected = tile_grid(s.info.dimensions, s.mpp, GridSpec(mpp=1.0, tile_size=128, stride=64, min_tissue=0.5),
                             tissue_mask(s))
    assert f"{len(expected)} tiles kept on a 11x15 grid" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.column_names == ["row", "col", "x", "y", "tissue"] and table.num_rows == len(expected) > 0
    np.testing.assert_array_equal(table["x"].to_numpy(), expected.x)
    np.testing.assert_array_equal(table["row"].to_numpy(), expected.row)
    meta = json.loads(table.schema.metadata[b"slidegrid"])
    assert meta["source_uri"] == path and meta["slide_mpp"] == 0.5 and meta["target_mpp"] == 1.0
    assert meta["tile_size"] == 128 and meta["stride"] == 64 and meta["grid_shape"] == [11, 15]
    assert [p.name for p in out.parent.iterdir()] == ["t.parquet"]  # written atomically, no temp file left


def test_cli_tiles_bad_spec_is_one_error_line(synth, tmp_path, capsys):
    path, _ = synth
    assert main(["tiles", path, "--min-tissue", "3", "--out", str(tmp_path / "t.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --min-tissue:")
    assert not (tmp_path / "t.parquet").exists()


def test_encode_keeps_a_slide_smaller_than_a_tile_as_one_padded_tile(tmp_path, ray_local):
    import tiffslide

    from slidegrid.encode import EncodeConfig, run_encode
    from slidegrid.io.grids import grid_uri, read_grid

    archive = tmp_path / "archive"
    # 400 x 400 px at 2 µm/px (800 µm) under 224-px tiles at 4 µm/px (896 µm = 448 level-0 px): one padded tile
    write_synthetic_slide(str(archive / "tiny.tiff"), SyntheticSpec(width=400, height=400, mpp=2.0, seed=3))
    # 40 x 40 px (80 µm) is 0.8 % of that tile: it can never reach --min-tissue
    write_synthetic_slide(str(archive / "speck.tiff"), SyntheticSpec(width=40, height=40, mpp=2.0, seed=3))
    out = tmp_path / "grids"
    config = EncodeConfig(input=str(archive), out=str(out), encoder="mean-rgb", dtype="float32", progress=False,
                          mlflow=False, grid=GridSpec(mpp=4.0, tile_size=224, min_tissue=0.05))
    results = {r.slide_id: r for r in run_encode(config).results}
    assert results["speck"].status == "smaller_than_tile" and "(40x40 px)" in results["speck"].error
    assert results["tiny"].status == "ok" and results["tiny"].tiles == 1
    grid = read_grid(grid_uri(str(out), "tiny"))
    assert grid.shape == (1, 1) and (grid.row[0], grid.col[0], grid.x[0], grid.y[0]) == (0, 0, 0, 0)
    assert grid.meta["slide_dimensions"] == [400, 400] and grid.meta["slide_mpp_y"] == 2.0
    with open_slide(str(archive / "tiny.tiff")) as s:
        mask = tissue_mask(s)
    assert mask.mpp == 8.0 and mask.mask.shape == (100, 100)  # 8-µm mask pixels cover the slide exactly
    assert grid.tissue[0] == pytest.approx(mask.mask.sum() * 8.0**2 / 896**2, rel=1e-5) and grid.tissue[0] > 0.05
    # the embedding (mean RGB) is that of the slide padded with white to the whole tile
    pixels = tiffslide.TiffSlide(str(archive / "tiny.tiff")).read_region((0, 0), 0, (400, 400), as_array=True)
    padded = np.full((448, 448, 3), 255.0)
    padded[:400, :400] = pixels[..., :3]
    np.testing.assert_allclose(grid.embedding[0], padded.reshape(-1, 3).mean(0) / 255, atol=2e-3)
