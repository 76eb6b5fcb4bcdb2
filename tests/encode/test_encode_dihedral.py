"""`slidegrid encode --dihedral` (NIC §3.2: every tile encoded under the 8 elements of D4) and its use by NIC.

The archive holds one slide S and, written losslessly, S rotated by 90° and S mirrored: transforming the whole
slide must equal transforming the grid's cell arrangement with each tile's encoding of that transform.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile
import tiffslide

from slidegrid.cli import main
from slidegrid.encode import EncodeConfig, run_encode, settings_hash
from slidegrid.encoders import EncoderSpec, build_encoder
from slidegrid.geometry.tiling import GridSpec
from slidegrid.io.grids import grid_uri, read_grid
from slidegrid.models.nic_cnn import crop_centre, training_crop
from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide

TILE = 32
ENCODER = ("timm:test_efficientnet", "random")  # tiny, random but seeded, and not rotation-invariant (C=256)
SHAPE = (24, 32)  # S's grid: 1024 x 768 px at 0.5 µm/px in 32-px tiles


def _d4(a: np.ndarray, k: int, axes: tuple[int, int]) -> np.ndarray:
    """TRANSFORMS[k] spelled out: k quarter turns from the row axis towards the column axis, then (k >= 4) the
    column axis reversed."""
    for _ in range(k % 4):
        a = np.rot90(a, 1, axes)
    return np.flip(a, axes[1]) if k >= 4 else a


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """S (1024 x 768 px at 0.5 µm/px), S turned 90° (rot90) and S mirrored (mirror), as lossless TIFFs: the
    three hold exactly the same pixels."""
    root = tmp_path_factory.mktemp("d4")
    write_synthetic_slide(str(root / "jpeg.tiff"), SyntheticSpec(width=1024, height=768, seed=7, n_tissue_blobs=2))
    with tiffslide.TiffSlide(str(root / "jpeg.tiff")) as s:
        pixels = np.asarray(s.read_region((0, 0), 0, (1024, 768), as_array=True))[..., :3]
    os.remove(root / "jpeg.tiff")
    slides = root / "slides"
    slides.mkdir()
    for name, img in (("s", pixels), ("rot90", np.rot90(pixels)), ("mirror", pixels[:, ::-1])):
        tifffile.imwrite(slides / f"{name}.tiff", np.ascontiguousarray(img), tile=(256, 256), compression="zlib",
                         photometric="rgb", resolution=(20000, 20000), resolutionunit="CENTIMETER")
    return slides


def _config(archive, out, **kw) -> EncodeConfig:
    return EncodeConfig(input=str(archive), out=str(out), encoder=ENCODER[0], weights=ENCODER[1],
                        dtype="float32", batch_size=32, mlflow=False, progress=False, **kw,
                        grid=GridSpec(mpp=0.5, tile_size=TILE))


@pytest.fixture(scope="module")
def encoded(archive, tmp_path_factory, ray_local):
    """The archive encoded without --dihedral, then with it (CLI) into the same folder, then with it again."""
    out = tmp_path_factory.mktemp("grids")
    plain_run = run_encode(_config(archive, out))
    plain = {r.slide_id: read_grid(grid_uri(str(out), r.slide_id)) for r in plain_run.results}
    code = main(["encode", str(archive), "--out", str(out), "--encoder", ENCODER[0], "--weights", ENCODER[1],
                 "--mpp", "0.5", "--tile-size", str(TILE), "--dtype", "float32", "--batch-size", "32", "--dihedral",
                 "--no-mlflow", "--no-progress"])
    assert code == 0
    again = run_encode(_config(archive, out, dihedral=True))
    return out, plain_run, plain, again


def test_dihedral_grids_hold_eight_rows_per_cell(encoded):
    out, _, plain, _ = encoded
    for sid, grid in plain.items():
        table = pq.read_table(grid_uri(str(out), sid))
        n = len(grid.row)
        assert n > 20 and table.num_rows == 8 * n
        t = table.column("transform").to_numpy()
        assert sorted(np.unique(t, return_counts=True)[1].tolist()) == [n] * 8
        assert set(t.tolist()) == set(range(8))
        cells = {k: set(zip(table.column("row").to_numpy()[t == k], table.column("col").to_numpy()[t == k]))
                 for k in range(8)}
        assert all(cells[k] == set(zip(grid.row, grid.col)) for k in range(8))
        assert pq.ParquetFile(grid_uri(str(out), sid)).num_row_groups == 8  # transform 0 readable alone


def test_transform_k_is_the_encoding_of_the_tile_transformed_by_k(encoded, archive):
    out, *_ = encoded
    grid = read_grid(grid_uri(str(out), "s"), transforms=True)
    assert grid.transforms.shape == (8, len(grid.row), 256) and grid.meta["dihedral"] is True
    encoder = build_encoder(EncoderSpec(*ENCODER))
    picks = np.random.default_rng(0).choice(len(grid.row), 6, replace=False)
    with tiffslide.TiffSlide(str(archive / "s.tiff")) as s:
        tiles = np.stack([np.asarray(s.read_region((int(grid.x[i]), int(grid.y[i])), 0, (TILE, TILE),
                                                   as_array=True))[..., :3] for i in picks])
    scale = np.abs(grid.transforms).max()  # a random network's features are small: tolerances relative to them
    for k in range(8):
        want = encoder.encode(np.ascontiguousarray(_d4(tiles, k, (1, 2))))
        np.testing.assert_allclose(grid.transforms[k, picks], want, atol=1e-4 * scale, rtol=1e-4)
        if k:  # the encoder is not invariant: a grid that stored the identity eight times would fail above
            assert np.abs(grid.transforms[k, picks] - grid.transforms[0, picks]).max() > 0.1 * scale


def test_transforming_the_slide_is_transforming_arrangement_and_tiles(encoded):
    """rot90(S) and mirror(S), encoded plainly, are S's grid with its cells AND tiles transformed by k = 1, 4."""
    out, _, plain, _ = encoded
    s = read_grid(grid_uri(str(out), "s"), transforms=True)
    for name, k in (("rot90", 1), ("mirror", 4)):
        dense, mask = s.dense(transform=k)
        turned, turned_mask = _d4(dense, k, (1, 2)), _d4(mask, k, (0, 1))
        want, want_mask = plain[name].dense()
        assert want.shape == turned.shape and plain[name].shape == (SHAPE[::-1] if k == 1 else SHAPE)
        both = turned_mask & want_mask  # the tissue masks of the three slides may differ at a cell or two
        assert both.sum() >= 0.9 * want_mask.sum()
        scale = np.abs(want).max()
        np.testing.assert_allclose(turned[:, both], want[:, both], atol=1e-4 * scale, rtol=1e-4)
        # The arrangement-only shortcut (cells turned, tiles not) is not the turned slide.
        assert np.abs(_d4(s.dense()[0], k, (1, 2))[:, both] - want[:, both]).max() > 0.1 * scale


def test_the_hash_covers_the_flag_and_readers_without_transforms_get_the_plain_grid(encoded, archive):
    out, plain_run, plain, again = encoded
    first = {r.slide_id: r for r in plain_run.results}
    resumed = {r.slide_id: r for r in again.results}
    assert settings_hash(_config(archive, out), "d") != settings_hash(_config(archive, out, dihedral=True), "d")
    for sid, grid in plain.items():
        flagged = read_grid(grid_uri(str(out), sid))
        assert flagged.meta["dihedral"] is True and grid.meta["dihedral"] is False
        assert flagged.meta["settings_hash"] == resumed[sid].settings_hash != first[sid].settings_hash
        assert resumed[sid].reused  # the flagged run redid every unflagged grid; the next one skips them
        assert flagged.transforms is None
        for col in ("row", "col", "x", "y", "tissue"):
            np.testing.assert_array_equal(getattr(flagged, col), getattr(grid, col))
        np.testing.assert_allclose(flagged.embedding, grid.embedding, atol=1e-5 * np.abs(grid.embedding).max(),
                                   rtol=1e-5)
        assert flagged.embedding.shape == grid.embedding.shape and flagged.embedding.dtype == grid.embedding.dtype


def test_show_reads_a_dihedral_grid_as_the_plain_one(encoded, tmp_path, capsys):
    out, _, plain, _ = encoded
    assert main(["show", grid_uri(str(out), "s"), "--out", str(tmp_path / "s.png"), "--height", "64"]) == 0
    assert f"{len(plain['s'].row)} tiles on a {SHAPE[0]}x{SHAPE[1]} grid, C=256" in capsys.readouterr().out


def test_nic_training_crops_use_the_encoded_transform(encoded):
    """A training sample under transform k is the crop of the tiles' k-th encodings, arranged by k."""
    out, *_ = encoded
    grid = read_grid(grid_uri(str(out), "s"), transforms=True)
    dense, mask = grid.dense()
    seen = set()
    for seed in range(12):
        x, m = training_crop(dense, mask, 5, np.random.default_rng(seed), grid)
        rng = np.random.default_rng(seed)  # the same draws: the centre, then k
        (r, c), k = crop_centre(mask, rng), int(rng.integers(8))
        view = np.pad(grid.dense(transform=k)[0], ((0, 0), (5, 5), (5, 5)))[:, r + 3:r + 8, c + 3:c + 8]
        np.testing.assert_array_equal(x, _d4(view, k, (1, 2)))
        np.testing.assert_array_equal(m, _d4(np.pad(mask, 5)[r + 3:r + 8, c + 3:c + 8], k, (0, 1)))
        seen.add(k)
    assert len(seen) >= 4 and seen - {0}


def test_nic_training_gets_the_transforms_and_its_model_carries_the_crop(encoded, tmp_path):
    """The trainer's grid cache hands NIC the encoded transforms, and build() stores --crop in the model (so
    `predict` on a registered model crops as in training)."""
    from slidegrid.models.nic_cnn import trained_crop
    from slidegrid.train.aggregator.config import build_train_config
    from slidegrid.train.aggregator.data import CohortExamples, GridCache
    from slidegrid.train.aggregator.loop import build

    out, _, plain, _ = encoded
    grid = GridCache().get(grid_uri(str(out), "s"))[2]
    assert grid.transforms.shape == (8, len(plain["s"].row), 256)
    cfg = build_train_config({"grids": str(out), "cohort": str(tmp_path / "c.csv"), "out": str(tmp_path),
                              "model": "nic-cnn", "crop": 24})
    model, _, _ = build(cfg, CohortExamples((), ("a", "b"), 256))
    assert trained_crop(model) == 24
