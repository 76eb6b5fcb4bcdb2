"""Opening slides and reading at exact mpp: real samples, vendor edge cases, hand-built pyramids, bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from slidegrid.errors import SlideError
from slidegrid.geometry.tissue import tissue_mask
from slidegrid.io.slides import open_slide


def write_pyramid(path, downsamples=(1, 4, 16), mpp: float | None = 0.25, size=(1024, 768), seed=0):
    """An uncompressed tiled pyramidal TIFF (SubIFDs, resolution in cm) whose levels are returned exactly.

    Uncompressed, so reads can be compared bit for bit with the arrays written. Each level is the
    area-average of level 0, as a scanner's pyramid is.
    """
    w, h = size
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 32, w // 32, 3), dtype=np.uint8)
    base = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    base = np.clip(base.astype(int) + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
    levels = [base] + [cv2.resize(base, (w // d, h // d), interpolation=cv2.INTER_AREA) for d in downsamples[1:]]
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, (lvl, d) in enumerate(zip(levels, downsamples)):
            res = {"resolution": (1e4 / (mpp * d),) * 2, "resolutionunit": "CENTIMETER"} if mpp else {}
            extra = {"subifds": len(levels) - 1} if i == 0 else {"subfiletype": 1}
            tif.write(lvl, tile=(128, 128), photometric="rgb", metadata=None, **res, **extra)
    return levels


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    path = tmp_path_factory.mktemp("pyr") / "p.tiff"
    return str(path), write_pyramid(path)


# -- real samples -------------------------------------------------------------------------------

def test_real_sample_info_and_reads(sample_slide):
    with open_slide(str(sample_slide)) as s:
        info = s.info
        assert info.level_count >= 1 and info.dimensions == info.level_dimensions[0]
        assert info.level_downsamples[0] == 1.0 and list(info.level_downsamples) == sorted(info.level_downsamples)
        assert 0.1 < info.mpp_x < 2.0 and info.mpp_y == pytest.approx(info.mpp_x, rel=0.01)
        assert info.mpp_source.startswith("metadata:") and not info.warnings
        assert info.file_size == sample_slide.stat().st_size
        mask = tissue_mask(s)
        inside = np.argwhere(mask.mask)
        r, c = inside[len(inside) // 2]  # a thumbnail pixel inside tissue
        x, y = int(c * mask.mpp / s.mpp) - 100, int(r * mask.mpp / s.mpp) - 100
        a = s.read_region(x, y, 448, 448, 0.5)
        b = s.read_region(x, y, 112, 112, 2.0)
    assert a.shape == (448, 448, 3) and b.shape == (112, 112, 3) and a.dtype == b.dtype == np.uint8
    assert a.std() > 5 and b.std() > 5, "region is blank"
    # Same area at 2 mpp == the 0.5-mpp read shrunk 4x: same physical size, same content.
    down = cv2.resize(a, (112, 112), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(down - b).mean() < 6


def test_cmu_sample_metadata(sample_slide):
    if sample_slide.name != "cmu-1-small-region.svs":
        pytest.skip("metadata of the documented CMU-1 sample only")
    with open_slide(str(sample_slide)) as s:
        assert s.info.dimensions == (2220, 2967) and s.info.vendor == "aperio"
        assert s.mpp == pytest.approx(0.499, abs=0.001) and s.info.objective_power == 20


# -- exact mpp on hand-built pyramids --------------------------------------------------------------

def _expected(levels, downsamples, level, x, y, lw, lh, w, h):
    d = downsamples[level]
    crop = np.full((lh, lw, 3), 255, np.uint8)  # beyond the slide is white
    inside = levels[level][y // d:y // d + lh, x // d:x // d + lw]
    crop[:inside.shape[0], :inside.shape[1]] = inside
    if (lw, lh) == (w, h):
        return crop
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if lw >= w else cv2.INTER_LINEAR)


@pytest.mark.parametrize(("downsamples", "slide_mpp", "mpp", "plan"), [
    ((1, 4, 16), 0.25, 1.0, (1, 64, 64)),    # level 1 is exactly 1.0 mpp: read it, nothing resampled
    ((1, 4, 16), 0.25, 4.0, (2, 64, 64)),    # level 2 exactly
    ((1, 4, 16), 0.25, 0.5, (0, 128, 128)),  # between levels: level 0 (above), shrunk by 1/2 — never level 1
    ((1, 4, 16), 0.25, 3.0, (1, 192, 192)),  # 12x: level 1 (4x) read at 3x the size and shrunk
    ((1, 4, 16), 0.25, 0.125, (0, 32, 32)),  # finer than the scan: level 0 enlarged
    ((1, 2, 4), 0.5, 1.0, (1, 64, 64)),      # 1.0 mpp on a 0.5 slide with 1,2,4 levels: level 1, no resize
    ((1, 2, 4), 0.5, 0.75, (0, 96, 96)),
    ((1, 2, 4), 0.5, 16.0, (2, 512, 512)),   # coarser than the top level: the top level, shrunk
])
def test_exact_mpp_reads_the_level_above_and_resamples_the_rest(tmp_path, downsamples, slide_mpp, mpp, plan):
    path = tmp_path / "p.tiff"
    levels = write_pyramid(path, downsamples, slide_mpp)
    x, y = 256, 128
    with open_slide(str(path)) as s:
        assert s.info.level_downsamples == tuple(float(d) for d in downsamples) and s.mpp == slide_mpp
        assert s.plan_read(64, 64, mpp) == plan
        got = s.read_region(x, y, 64, 64, mpp)
    assert got.shape == (64, 64, 3)
    want = _expected(levels, downsamples, plan[0], x, y, plan[1], plan[2], 64, 64)
    assert np.abs(got.astype(int) - want).max() <= 1


def test_tiles_cover_the_same_area_whatever_the_level(pyramid):
    """A 1.0-mpp tile from level 1 shows what the 0.25-mpp level-0 read of that area shows."""
    path, _ = pyramid
    with open_slide(path) as s:
        tile = s.read_region(300, 200, 100, 100, 1.0)
        fine = s.read_region(300, 200, 400, 400, 0.25)
    assert np.abs(cv2.resize(fine, (100, 100), interpolation=cv2.INTER_AREA).astype(int) - tile).mean() < 2


def test_read_across_the_edge_is_padded_white(pyramid):
    path, levels = pyramid
    with open_slide(path) as s:
        region = s.read_region(1024 - 128, 768 - 64, 64, 64, 1.0)  # level 1; 32x16 level pixels inside
        before = s.read_region(-40, -40, 20, 20, 1.0)
    np.testing.assert_array_equal(region[:16, :32], levels[1][-16:, -32:])
    assert (region[16:] == 255).all() and (region[:, 32:] == 255).all()
    np.testing.assert_array_equal(before[10:, 10:], levels[1][:10, :10])
    assert (before[:10] == 255).all() and (before[:, :10] == 255).all()


@pytest.mark.parametrize(("mpp", "level"), [(4.0, 2), (2.0, 1), (8.0, 2)])
def test_thumbnail_reads_the_smallest_sufficient_level(pyramid, mpp, level):
    path, levels = pyramid
    with open_slide(path) as s:
        thumb = s.thumbnail(mpp)
    d = {0: 1, 1: 4, 2: 16}[level]
    scale = mpp / 0.25
    h, w = round(768 / scale), round(1024 / scale)
    want = cv2.resize(levels[level], (w, h), interpolation=cv2.INTER_AREA) if scale != d else levels[level]
    assert thumb.shape == (h, w, 3) and np.abs(thumb.astype(int) - want).max() <= 1


@pytest.mark.parametrize(("w", "h", "mpp"), [(0, 10, 0.5), (10, 10, 0.0), (10, 10, -1.0), (10, 10, float("nan"))])
def test_nonsense_read_arguments(pyramid, w, h, mpp):
    with open_slide(pyramid[0]) as s, pytest.raises(SlideError, match="must be positive"):
        s.read_region(0, 0, w, h, mpp)


# -- vendor edge cases (../shared/data/edge) -------------------------------------------------------

def test_small_svs_opens_with_metadata(edge_dir):
    with open_slide(str(edge_dir / "small.svs")) as s:
        assert s.info.dimensions == (16, 16) and s.info.vendor == "aperio" and s.info.objective_power == 20
        assert s.mpp == pytest.approx(0.499, abs=0.01)
        region = s.read_region(0, 0, 16, 16, s.mpp)
    assert region.shape == (16, 16, 3) and region.std() > 0


def test_boxes_tiff_implausible_mpp_needs_override(edge_dir):
    with open_slide(str(edge_dir / "boxes.tiff")) as s:
        assert s.info.level_count == 4 and s.info.mpp_x > 100
        assert s.info.warnings and "implausible" in s.info.warnings[0]
        with pytest.raises(SlideError, match="--mpp-override") as err:
            _ = s.mpp
        assert "boxes.tiff" in str(err.value)
    with open_slide(str(edge_dir / "boxes.tiff"), mpp_override=0.5) as s:
        assert s.mpp == 0.5 and s.info.mpp_source == "override" and not s.info.warnings
        region = s.read_region(0, 0, 100, 100, 1.0)
    assert region.shape == (100, 100, 3) and region.std() > 0


def test_unreadable_svs_fails_on_read_naming_the_slide(edge_dir):
    with open_slide(str(edge_dir / "unreadable.svs")) as s, pytest.raises(SlideError) as err:
        s.read_region(0, 0, 16, 16, s.mpp)
    assert "unreadable.svs" in str(err.value) and "corrupt" in str(err.value)


# -- bad input: every error names the input and says what to do ------------------------------------

@pytest.mark.parametrize(("keep", "reason"), [(100, "not a readable"), (0.5, "truncated"), (0.99, "truncated")])
def test_truncated_tiff(pyramid, tmp_path, keep, reason):
    data = Path(pyramid[0]).read_bytes()
    bad = tmp_path / "truncated.tiff"
    bad.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(SlideError, match=reason) as err:
        open_slide(str(bad))
    assert err.value.input == str(bad) and ("download it again" in str(err.value) or "complete" in str(err.value))


def test_text_file_named_svs(tmp_path):
    bad = tmp_path / "notes.svs"
    bad.write_text("this is not a slide")
    with pytest.raises(SlideError, match="not a readable whole-slide image") as err:
        open_slide(str(bad))
    assert err.value.input == str(bad)


@pytest.mark.parametrize("prefix", ["", "file://"])
def test_missing_file(tmp_path, prefix):
    with pytest.raises(SlideError, match="file not found; check the path") as err:
        open_slide(prefix + str(tmp_path / "nope.svs"))
    assert err.value.input == str(tmp_path / "nope.svs")


def test_directory_is_not_a_slide(tmp_path):
    with pytest.raises(SlideError, match="is a directory"):
        open_slide(str(tmp_path))


def test_non_rgb_image_is_refused(tmp_path):
    path = tmp_path / "fluo.tiff"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint16), resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    with pytest.raises(SlideError, match="not a brightfield RGB slide"):
        open_slide(str(path))


def test_slide_without_mpp_needs_override(tmp_path):
    path = tmp_path / "nompp.tiff"
    write_pyramid(path, mpp=None)
    with open_slide(str(path)) as s:
        assert s.info.mpp_source == "missing" and s.info.mpp_x is None
        with pytest.raises(SlideError, match="--mpp-override") as err:
            s.read_region(0, 0, 10, 10, 0.5)
        assert err.value.input == str(path)
    with open_slide(str(path), mpp_override=0.25) as s:
        assert s.mpp == 0.25 and s.info.mpp_source == "override"
        assert s.plan_read(64, 64, 1.0) == (1, 64, 64)


@pytest.mark.parametrize("override", [500.0, 0.0, "abc"])
def test_override_outside_plausible_range_is_refused(pyramid, override):
    with pytest.raises(SlideError, match="plausible range"):
        open_slide(pyramid[0], mpp_override=override)


def test_benchmark_read_quick_prints_one_table():
    """Smoke test of jobs/benchmarks/benchmark_read.py: every step runs in its own process and lands in one table."""
    script = Path(__file__).resolve().parents[2] / "jobs" / "benchmarks" / "benchmark_read.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--tiles", "40"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ")]
    assert len(rows) == 7 and "tissue mask" in rows[3] and "writing" in rows[4] and "sparse" in rows[5]
    for row, reader in zip(rows[1:3], ("tiffslide", "openslide")):
        assert re.search(rf"--reader {reader} \| \d+ \| \d+ \(bare {reader} loop\) \| \d+\.\d\dx", row)
    assert all(re.search(r"peak \d+ MB", r) for r in rows[3:])
