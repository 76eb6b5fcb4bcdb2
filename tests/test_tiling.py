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
from slidegrid.slides import open_slide
from slidegrid.synthetic import SyntheticSpec, write_synthetic_slide
from slidegrid.tiling import GridSpec, concentric_tiles, perturb, read_concentric, sample_patches, tile_grid
from slidegrid.tissue import TissueMask, tissue_mask


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiling") / "t.tiff"
    truth = write_synthetic_slide(str(path), SyntheticSpec(width=2048, height=1536, seed=5, n_tumours=1))
    return str(path), truth


def _level0(mask: np.ndarray, px: int) -> np.ndarray:
    """The mask blown up to level 0 when one mask pixel is `px` level-0 pixels (for brute-force checks)."""
    return np.kron(mask, np.ones((px, px), bool))


def test_real_sample_tiles_lie_on_tissue(sample_slide):
    with open_slide(str(sample_slide)) as s:
        mask = tissue_mask(s)
        grid = tile_grid(s.info.dimensions, s.mpp, GridSpec(mpp=0.5, tile_size=224), mask)
        W, H = s.info.dimensions
    size0 = grid.tile_size_level0
    assert len(grid) > 0 and (grid.tissue >= 0.25).all()
    assert (grid.x >= 0).all() and (grid.y >= 0).all()
    assert (grid.x + size0 <= W).all() and (grid.y + size0 <= H).all()
    # Kept tiles cover much more tissue than the slide as a whole, and no kept tile is pure glass.
    assert grid.tissue.mean() > 2 * mask.fraction or grid.tissue.mean() > 0.8
    f = s.mpp / mask.mpp
    for x, y, t in zip(grid.x, grid.y, grid.tissue):
        footprint = mask.mask[int(y * f):int(np.ceil((y + size0) * f)), int(x * f):int(np.ceil((x + size0) * f))]
        assert footprint.any() and abs(footprint.mean() - t) < 0.35  # partial edge pixels differ a little


def test_grid_maps_row_col_to_level0_exactly():
    spec = GridSpec(mpp=0.5, tile_size=224, stride=100, min_tissue=0.0)
    slide_mpp = 0.499  # a real scanner's mpp: tiles are 224.45 level-0 px, steps 100.2
    grid = tile_grid((1000, 700), slide_mpp, spec)
    step0 = 100 * 0.5 / slide_mpp
    np.testing.assert_array_equal(grid.x, np.round(grid.col * 100 * 0.5 / slide_mpp).astype(np.int64))
    np.testing.assert_array_equal(grid.y, np.round(grid.row * 100 * 0.5 / slide_mpp).astype(np.int64))
    # every complete tile, and only those: the next column/row would run off the slide
    assert grid.shape == (5, 8) and len(grid) == 40
    assert (grid.x + grid.tile_size_level0 <= 1000).all() and round(8 * step0) + grid.tile_size_level0 > 1000
    assert round(5 * step0) + grid.tile_size_level0 > 700
    # row-major from the top-left
    assert list(zip(grid.row[:3], grid.col[:3])) == [(0, 0), (0, 1), (0, 2)] and grid.row[8] == 1
    assert grid.row.dtype == np.int32 and grid.x.dtype == np.int64 and grid.tissue.dtype == np.float32


def test_without_a_mask_every_tile_is_kept():
    grid = tile_grid((1024, 512), 0.25, GridSpec(mpp=1.0, tile_size=64))
    assert grid.shape == (2, 4) and len(grid) == 8 and (grid.tissue == 1.0).all()
    assert grid.tile_size_level0 == 256 and sorted(set(grid.x.tolist())) == [0, 256, 512, 768]


def test_tissue_fraction_is_the_covered_area():
    rng = np.random.default_rng(3)
    mask = rng.random((40, 50)) > 0.6  # 4 µm/px over a 1 µm/px slide of 200 x 160 px
    spec = GridSpec(mpp=1.0, tile_size=10, stride=7, min_tissue=0.0)  # tiles straddle mask pixels
    grid = tile_grid((200, 160), 1.0, spec, TissueMask(mask, 4.0))
    big = _level0(mask, 4)
    brute = np.array([big[y:y + 10, x:x + 10].mean() for x, y in zip(grid.x, grid.y)])
    np.testing.assert_allclose(grid.tissue, brute, atol=1e-5)
    kept = tile_grid((200, 160), 1.0, GridSpec(mpp=1.0, tile_size=10, stride=7, min_tissue=0.5),
                     TissueMask(mask, 4.0))
    assert len(kept) == (brute >= 0.5).sum() and (kept.tissue >= 0.5).all()


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


def test_slide_smaller_than_a_tile_gives_an_empty_grid():
    grid = tile_grid((16, 16), 0.5, GridSpec(mpp=0.5, tile_size=224))
    assert len(grid) == 0 and grid.shape == (0, 0)
    table = grid.to_table()
    assert table.num_rows == 0 and table.column_names == ["row", "col", "x", "y", "tissue"]


def test_small_svs_gives_an_empty_or_one_tile_grid(edge_dir):
    with open_slide(str(edge_dir / "small.svs")) as s:
        for size in (224, 16, 8):
            grid = tile_grid(s.info.dimensions, s.mpp, GridSpec(mpp=s.mpp, tile_size=size, min_tissue=0),
                             tissue_mask(s))
            assert len(grid) <= 4 and (grid.x + grid.tile_size_level0 <= 16).all()
        assert len(tile_grid(s.info.dimensions, s.mpp, GridSpec(mpp=0.5, tile_size=224), tissue_mask(s))) <= 1


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
    assert meta["tile_size"] == 100 and meta["stride"] == 80 and meta["grid_shape"] == list(grid.shape)


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
