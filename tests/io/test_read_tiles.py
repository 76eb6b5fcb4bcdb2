"""`Slide.read_tiles`: many grid tiles at once, each source tile decoded once, the pixels of `read_region`
tile by tile (issue 13 item 5).

Every comparison is exact (np.array_equal) against the per-tile `read_region` path on real files: JPEG
pyramids written here (RGB, YCbCr-subsampled, non-square pixels, RGBA, sparse and strip images) and the
real-world cases and sample slides of ../shared/data where present.
"""

from __future__ import annotations

import glob

import cv2
import numpy as np
import pytest
import tifffile

from _images import smooth_rgb, write_cut_short_jpeg
from conftest import SAMPLE_DIR, SHARED_DATA
from slidegrid.errors import SlideError
from slidegrid.geometry.tiling import GridSpec, tile_grid
from slidegrid.io.readers import tiffslide_backend
from slidegrid.io.slides import open_slide
from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide

CASES = SHARED_DATA / "realworld" / "cases"


def _case(name: str) -> str:
    path = next(iter(glob.glob(str(CASES / "*" / name))), None)
    if path is None:
        pytest.skip(f"case input {name} not in {CASES}")
    return path


def smooth_rgb_(h: int, w: int, seed: int = 0):
    return smooth_rgb(h, w, seed, sigma=4, low=20, span=220)


def _per_tile(slide, x, y, t: int, mpp: float) -> np.ndarray:
    return np.stack([slide.read_region(int(a), int(b), t, t, mpp) for a, b in zip(x, y)])


def _grid(slide, mpp: float, t: int, stride: int | None = None, extra=()) -> tuple[np.ndarray, np.ndarray]:
    """The tile grid over the whole slide (no tissue filter), plus `extra` (x, y) positions."""
    g = tile_grid(slide.info.dimensions, slide.mpp_xy, GridSpec(mpp=mpp, tile_size=t, stride=stride, min_tissue=0))
    x, y = g.x.tolist(), g.y.tolist()
    for a, b in extra:
        x.append(a)
        y.append(b)
    return np.asarray(x, np.int64), np.asarray(y, np.int64)


def _assert_same(path: str, mpp: float, t: int, stride: int | None = None, extra=(), reader: str = "auto",
                 limit: int | None = None) -> np.ndarray:
    with open_slide(path, reader=reader) as s, open_slide(path, reader=reader) as ref:
        x, y = _grid(s, mpp, t, stride, extra)
        n = len(x) - len(extra)
        if limit and n > limit:  # `limit` grid tiles spread over the slide, and the extra ones
            keep = np.r_[np.linspace(0, n - 1, limit).astype(int), np.arange(n, len(x))]
            x, y = x[keep], y[keep]
        got = s.read_tiles(x, y, t, mpp)
        want = _per_tile(ref, x, y, t, mpp)
    assert got.shape == (len(x), t, t, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
    bad = [k for k in range(len(x)) if not np.array_equal(got[k], want[k])]
    assert not bad, f"tiles differ at {[(int(x[k]), int(y[k])) for k in bad[:5]]}"
    return got


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A synthetic pyramidal JPEG slide (RGB, 256-px tiles, levels 1 and 4, 0.5 µm/px) with partial edge tiles."""
    path = tmp_path_factory.mktemp("rt") / "synth.tiff"
    write_synthetic_slide(str(path), SyntheticSpec(width=2300, height=1700, seed=3, n_tumours=1))
    return str(path)


# Off-grid positions: partly outside on every side, wholly outside, unaligned with the level.
EDGES = ((-50, 37), (2250, 1650), (1003, -100), (-9000, 5), (2299, 1699), (5, 3), (1233, 777))


@pytest.mark.parametrize(("mpp", "t", "stride"), [
    (0.5, 224, None),  # the level's own mpp, aligned: cut from the decoded tiles, no resampling
    (0.5, 224, 160),   # overlapping tiles
    (0.5, 300, None),  # tiles larger than the source tiles
    (2.0, 96, None),   # level 1 exactly (a level other than 0)
    (1.9999, 96, None),  # level 1 within its tolerance: boxes of the tile's size, yet resampled by a hair
    (1.0, 64, None),   # between levels: level 0, area-resampled 2:1
    (3.0, 64, None),   # between levels: level 1 at 1.5:1, fractional boxes
    (0.3, 64, None),   # finer than the scan: level 0 enlarged
    (9.0, 40, None),   # coarser than the top level
])
def test_read_tiles_equals_read_region_tile_by_tile(synth, mpp, t, stride):
    _assert_same(synth, mpp, t, stride, extra=EDGES)


def test_each_covered_source_tile_is_decoded_once_per_call(synth, monkeypatch):
    t = 224
    with open_slide(synth) as s, open_slide(synth) as ref:
        x, y = _grid(s, 0.5, t, extra=EDGES[:3])
        w, h = s.info.dimensions
        covered = {(r, c) for a, b in zip(x.tolist(), y.tolist())
                   for r in range(max(b, 0) // 256, (min(b + t, h) - 1) // 256 + 1)
                   for c in range(max(a, 0) // 256, (min(a + t, w) - 1) // 256 + 1)
                   if a < w and b < h and a + t > 0 and b + t > 0}
        s.read_tiles(x, y, t, 0.5)
        assert s._reader.tiles_decoded == len(covered)
        s.read_tiles(x, y, t, 0.5)  # again once each at most: the last band of tiles comes from the cache
        assert len(covered) < s._reader.tiles_decoded < 2 * len(covered)
        _per_tile(ref, x, y, t, 0.5)  # the region path, whose cache holds the slide: also once each
        assert ref._reader.tiles_decoded == len(covered)
    # A cache too small to hold a band of tiles: still once per call (tiles are held until no tile needs them).
    monkeypatch.setattr(tiffslide_backend, "_CACHE_BYTES", 1)
    with open_slide(synth) as s:
        got = s.read_tiles(x, y, t, 0.5)
        assert s._reader.tiles_decoded == len(covered)
        back = s.read_tiles(x[::-1], y[::-1], t, 0.5)  # any order, and nothing left in the cache: once each again
        assert s._reader.tiles_decoded == 2 * len(covered)
        assert np.array_equal(back, got[::-1])
        with open_slide(synth) as ref:
            assert np.array_equal(got, _per_tile(ref, x, y, t, 0.5))


def test_resampled_reads_decode_the_chosen_level_once(synth):
    with open_slide(synth) as s:
        x, y = _grid(s, 3.0, 64)
        s.read_tiles(x, y, 64, 3.0)
        level1 = s._reader._pages[1]
        assert s._reader.tiles_decoded == level1.chunked[0] * level1.chunked[1]  # the whole of level 1, once


def test_empty_and_bad_arguments(synth):
    with open_slide(synth) as s:
        assert s.read_tiles(np.zeros(0, int), np.zeros(0, int), 32, 0.5).shape == (0, 32, 32, 3)
        with pytest.raises(SlideError):
            s.read_tiles([0], [0, 1], 32, 0.5)
        with pytest.raises(SlideError):
            s.read_tiles([0], [0], 32, 0.0)


# -- files written here ---------------------------------------------------------------------------

def _jpeg_pyramid(path, base: np.ndarray, downsamples=(1, 4), tile=128, mpp=(0.25, 0.25), **kw) -> None:
    h, w = base.shape[:2]
    with tifffile.TiffWriter(path) as tif:
        for i, d in enumerate(downsamples):
            lvl = base if d == 1 else cv2.resize(base, (w // d, h // d), interpolation=cv2.INTER_AREA)
            extra = {"subifds": len(downsamples) - 1} if i == 0 else {"subfiletype": 1}
            tif.write(lvl, tile=(tile, tile), compression="jpeg", resolutionunit="CENTIMETER",
                      resolution=(1e4 / (mpp[0] * d), 1e4 / (mpp[1] * d)), metadata=None, **extra, **kw)


def test_ycbcr_subsampled_jpeg(tmp_path):
    path = str(tmp_path / "ycbcr.tif")
    _jpeg_pyramid(path, smooth_rgb_(700, 900), photometric="ycbcr", subsampling=(2, 2))
    assert tifffile.TiffFile(path).pages[0].photometric == 6
    for mpp, t in ((0.25, 128), (1.0, 100), (0.6, 64)):
        _assert_same(path, mpp, t, extra=EDGES[:3])


def test_non_square_pixels(tmp_path):
    path = str(tmp_path / "nonsquare.tif")
    _jpeg_pyramid(path, smooth_rgb_(512, 1024), mpp=(0.25, 0.5))
    with open_slide(path) as s:
        assert s.mpp_xy == pytest.approx((0.25, 0.5))
    for mpp, t in ((1.0, 64), (2.0, 48), (0.5, 64)):  # level 0 (4:2), level 1 (2:1), level 0 (2:1 on x only)
        _assert_same(path, mpp, t, extra=EDGES[:3])


def test_alpha_is_laid_on_white(tmp_path):
    rgba = np.dstack([smooth_rgb_(300, 400), np.zeros((300, 400), np.uint8)])
    rgba[50:250, 60:330, 3] = np.linspace(0, 255, 270).astype(np.uint8)
    path = str(tmp_path / "rgba.tif")
    tifffile.imwrite(path, rgba, tile=(64, 64), compression="zlib", extrasamples=["unassalpha"], photometric="rgb",
                     resolution=(40000, 40000), resolutionunit="CENTIMETER")
    got = _assert_same(path, 0.25, 64, extra=EDGES[:3])
    assert (got[0][:50] == 255).all()  # transparent: glass


def test_sparse_tiles_are_glass(tmp_path):
    path = str(tmp_path / "sparse.tif")
    tifffile.imwrite(path, smooth_rgb_(512, 512), tile=(128, 128), compression="jpeg",
                     resolution=(20000, 20000), resolutionunit="CENTIMETER")
    with tifffile.TiffFile(path, mode="r+") as t:
        offsets, counts = list(t.pages[0].dataoffsets), list(t.pages[0].databytecounts)
        offsets[5] = counts[5] = 0  # tile (1, 1) was never written
        t.pages[0].tags["TileOffsets"].overwrite(offsets)
        t.pages[0].tags["TileByteCounts"].overwrite(counts)
    got = _assert_same(path, 0.5, 96, extra=EDGES[:3])
    with open_slide(path) as s:
        tile = s.read_tiles([128], [128], 128, 0.5)[0]
    assert (tile == 255).all()
    assert got.shape[0] > 4


def test_strips_decode_once(tmp_path):
    img = smooth_rgb_(600, 800)
    path = str(tmp_path / "strips.tif")
    tifffile.imwrite(path, img, rowsperstrip=64, compression="zlib", resolution=(20000, 20000),
                     resolutionunit="CENTIMETER")
    _assert_same(path, 0.5, 100, extra=EDGES[:3])
    with open_slide(path) as s:
        x, y = _grid(s, 0.5, 100)
        s.read_tiles(x, y, 100, 0.5)
        assert s._reader.tiles_decoded == 10  # ceil(600 / 64) strips, once each
        assert np.array_equal(s.read_tiles([100], [150], 100, 0.5)[0], img[150:250, 100:200])


def test_damaged_tiles_fail_the_call_naming_the_tile(tmp_path):
    path = write_cut_short_jpeg(tmp_path / "cut.tif")  # the writer stopped half-way through tile (1, 1)
    with open_slide(str(path)) as s:
        assert s.read_tiles([0, 256], [0, 0], 256, 0.5).shape == (2, 256, 256, 3)
        with pytest.raises(SlideError, match=r"damaged tile at level-0 \(256, 256\).*end-of-image"):
            s.read_tiles([0, 200], [0, 200], 100, 0.5)


# -- real files -----------------------------------------------------------------------------------

def test_jpeg2000_ycbcr_33003():
    _assert_same(_case("aperio_jp2k_33003_ycbcr.svs"), 0.5, 128, extra=EDGES[:2], limit=24)


def test_real_rgba_case():
    _assert_same(_case("rgba_roi.tif"), 1.0, 96, extra=EDGES[:2], limit=24)


def test_real_non_square_case():
    _assert_same(_case("nonsquare_0.25x0.5.tif"), 1.0, 112, extra=EDGES[:2], limit=24)


def test_real_corrupt_tiles_case():
    path = _case("corrupt_mid_tiles.tif")
    with open_slide(path) as s:
        s.read_tiles([0, 256], [0, 256], 256, 0.5)
        with pytest.raises(SlideError, match=r"damaged tile at level-0 \(1280, 768\)"):
            s.read_tiles([0, 1024, 1280], [0, 768, 768], 256, 0.5)


def _sample() -> str:
    path = SAMPLE_DIR / "cmu-1-small-region.svs"
    files = [path] if path.exists() else sorted(SAMPLE_DIR.glob("*.svs")) if SAMPLE_DIR.is_dir() else []
    if not files:
        pytest.skip(f"no sample slide in {SAMPLE_DIR}")
    return str(files[0])


@pytest.mark.parametrize("which", ["level", "0.5", "2.0"])
def test_real_sample_slide(which):
    path = _sample()
    with open_slide(path) as s:
        mpp = s.mpp if which == "level" else float(which)
    _assert_same(path, mpp, 224 if which != "2.0" else 112, extra=EDGES[:3], limit=30)


@pytest.mark.parametrize("mpp", ["level", 2.0])
def test_openslide_reads_the_same_through_the_region_path(mpp):
    pytest.importorskip("openslide")
    path = _sample()
    with open_slide(path, reader="openslide") as s:
        assert s._reader.read_boxes(0, np.zeros(1), np.zeros(1), np.ones(1), np.ones(1)) is None
        mpp = s.mpp if mpp == "level" else mpp
    _assert_same(path, mpp, 112, extra=EDGES[:3], reader="openslide", limit=24)
