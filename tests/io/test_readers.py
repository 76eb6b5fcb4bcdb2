"""Every real slide read right or refused: reader backends, scanner metadata and pixels (issue 11, items 1-3).

Inputs are the cases of ../shared/data/realworld/cases (their README gives the right value of each), the
vendor samples of ../shared/data, and files these tests write for kinds the cases do not cover.
"""

from __future__ import annotations

import glob
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from _images import smooth_rgb, write_cut_short_jpeg
from conftest import SHARED_DATA
from slidegrid.errors import SlideError
from slidegrid.geometry.tiling import GridSpec, tile_grid
from slidegrid.geometry.tissue import tissue_mask
from slidegrid.io.readers import tiffslide_backend
from slidegrid.io.slides import open_slide

CASES = SHARED_DATA / "realworld" / "cases"


def _case(name: str) -> Path:
    path = next(iter(glob.glob(str(CASES / "*" / name))), None)
    if path is None:
        pytest.skip(f"case input {name} not in {CASES}")
    return Path(path)


# -- 01: undecodable Aperio description ------------------------------------------------------------

@pytest.mark.parametrize("reader", ["auto", "tiffslide", "openslide"])
def test_non_ascii_aperio_description_reads_like_its_clean_twin(reader):
    bad, clean = _case("kfbio_nonascii.svs"), _case("kfbio_clean.svs")
    with open_slide(str(bad), reader=reader) as s, open_slide(str(clean)) as t:
        i = s.info
        assert (i.mpp_x, i.mpp_y, i.vendor) == (0.484498, 0.484498, "aperio")
        assert i.mpp_source == "metadata:aperio" and i.level_dimensions == ((3000, 2000), (750, 500))
        assert np.array_equal(s.read_region(900, 600, 256, 256, 0.484498), t.read_region(900, 600, 256, 256, 0.484498))


# -- 02: resolution units -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["unit_cm.tif", "unit_inch.tif", "unit_mm.tif", "unit_um.tif"])
@pytest.mark.parametrize("reader", ["tiffslide", "openslide"])
def test_resolution_tags_in_every_real_unit_give_the_pixel_size(name, reader):
    with open_slide(str(_case(name)), reader=reader) as s:
        assert s.mpp_xy == pytest.approx((0.5, 0.5)) and s.info.mpp_source == "metadata:tiff-tags"


@pytest.mark.parametrize("name", ["unit_none.tif", "unit_missing.tif", "res_zero.tif", "res_zero_over_zero.tif"])
@pytest.mark.parametrize("reader", ["tiffslide", "openslide"])
def test_no_physical_resolution_asks_for_the_override_and_the_override_works(name, reader):
    path = str(_case(name))
    with open_slide(path, reader=reader) as s:
        assert s.info.mpp_source == "missing" and s.info.mpp_x is None
        with pytest.raises(SlideError, match="pass --mpp-override"):
            s.read_region(0, 0, 64, 64, 1.0)
    with open_slide(path, mpp_override=0.5, reader=reader) as s, \
            open_slide(str(_case("unit_cm.tif")), reader=reader) as ref:
        assert s.mpp == 0.5 and s.info.mpp_source == "override"
        assert np.array_equal(s.read_region(200, 100, 64, 64, 1.0), ref.read_region(200, 100, 64, 64, 1.0))


def test_resolution_tags_written_by_tifffile_in_any_unit(tmp_path):
    img = smooth_rgb(256, 256)
    for unit, res in (("CENTIMETER", 40000.0), ("INCH", 101600.0)):  # both 0.25 µm/px
        path = tmp_path / f"{unit}.tif"
        tifffile.imwrite(path, img, tile=(128, 128), resolution=(res, res), resolutionunit=unit)
        with open_slide(str(path)) as s:
            assert s.mpp_xy == pytest.approx((0.25, 0.25))


# -- 03: non-square pixels ------------------------------------------------------------------------

@pytest.mark.parametrize("reader", ["tiffslide", "openslide"])
def test_non_square_pixels_are_resampled_per_axis_never_averaged(reader):
    with open_slide(str(_case("nonsquare_0.25x0.5.tif")), reader=reader) as s:
        assert s.mpp_xy == (0.25, 0.5) and not s.square
        with pytest.raises(SlideError, match="non-square pixels"):
            _ = s.mpp
        tile = s.read_region(896, 448, 224, 224, 1.0)  # 224 µm square: 896 px along x, 448 along y
        level0 = s.read_level_region(896, 448, 0, 896, 448)
    expected = cv2.resize(level0, (224, 224), interpolation=cv2.INTER_AREA)
    assert np.abs(tile.astype(int) - expected).mean() < 1
    grid = tile_grid(s.info.dimensions, s.mpp_xy, GridSpec(mpp=1.0, tile_size=224))
    assert grid.shape == (2, 2) and sorted(set(grid.x.tolist())) == [0, 896] and sorted(set(grid.y.tolist())) == [0, 448]


# -- 07: OME-XML pixel size -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ome_um.ome.tif", "ome_nm.ome.tif"])
def test_ome_xml_physical_size_in_any_unit(name):
    with open_slide(str(_case(name))) as s:
        assert s.mpp_xy == pytest.approx((0.2527, 0.2527)) and s.info.mpp_source == "metadata:ome-xml"
        assert s.info.level_count == 3  # the SubIFD pyramid is used, not level 0 alone


def test_ome_xml_wins_over_conflicting_tiff_tags_with_a_warning():
    with open_slide(str(_case("ome_conflict.ome.tif"))) as s:
        assert s.mpp_xy == pytest.approx((0.2527, 0.2527)) and s.info.mpp_source == "metadata:ome-xml"
        assert any("OME-XML" in w for w in s.info.warnings)


def test_ome_without_physical_size_asks_for_the_override():
    with open_slide(str(_case("ome_no_physical.ome.tif"))) as s:
        assert s.info.mpp_source == "missing"


def test_vendor_pixel_size_sources_written_here(tmp_path):
    """Philips' DICOM_PIXEL_SPACING (mm, row then column) and Ventana BIF's XMP ScanRes (µm)."""
    img = smooth_rgb(256, 256)
    philips = ('<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
               '<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">'
               '"0.0005" "0.00025"</Attribute></DataObject>')
    tifffile.imwrite(tmp_path / "philips.tif", img, tile=(128, 128), description=philips)
    with open_slide(str(tmp_path / "philips.tif")) as s:
        assert s.mpp_xy == pytest.approx((0.25, 0.5)) and s.info.mpp_source == "metadata:philips"
    xmp = b'<?xpacket?><x:xmpmeta><iScan Magnification="40" ScanRes="0.2325"/></x:xmpmeta>'
    tifffile.imwrite(tmp_path / "bif.tif", img, tile=(128, 128), extratags=[(700, 1, len(xmp), xmp, True)])
    with open_slide(str(tmp_path / "bif.tif")) as s:
        assert s.mpp_xy == pytest.approx((0.2325, 0.2325)) and s.info.mpp_source == "metadata:ventana-xmp"


# -- levels whose downsample is not a power of two ------------------------------------------------

def _rounded_pyramid(path: Path) -> tuple[np.ndarray, float]:
    """A lossless pyramid whose levels are exact area averages at scanner-rounded sizes (1000 → 333 → 111)."""
    base = smooth_rgb(750, 1000, seed=3)
    levels = [base, cv2.resize(base, (333, 250), interpolation=cv2.INTER_AREA),
              cv2.resize(base, (111, 83), interpolation=cv2.INTER_AREA)]
    with tifffile.TiffWriter(path) as w:
        w.write(levels[0], tile=(128, 128), subifds=2, resolution=(40000, 40000), resolutionunit="CENTIMETER")
        for lvl in levels[1:]:
            w.write(lvl, tile=(64, 64), subfiletype=1)
    return base, 0.25


def test_levels_with_rounded_sizes_are_read_at_their_true_per_axis_scale(tmp_path):
    base, mpp0 = _rounded_pyramid(tmp_path / "rounded.tif")
    with open_slide(str(tmp_path / "rounded.tif")) as s:
        assert s.info.level_dimensions == ((1000, 750), (333, 250), (111, 83))
        for x, y, scale in ((100, 80, 4), (404, 212, 4), (333, 111, 6), (96, 300, 9), (0, 0, 8)):
            n = 32
            assert s.plan_read(n, n, mpp0 * scale)[0] > 0  # read through a rounded level, not level 0
            tile = s.read_region(x, y, n, n, mpp0 * scale)
            box = base[y:y + n * scale, x:x + n * scale].astype(np.float64)
            truth = box.reshape(n, scale, n, scale, 3).mean(axis=(1, 3))  # the level-0 area average
            assert np.abs(tile - truth).mean() < 1, (x, y, scale)
        whole = s.read_region(100, 80, 64, 32, mpp0 * 4)
        halves = np.concatenate([s.read_region(100, 80, 32, 32, mpp0 * 4),
                                 s.read_region(100 + 32 * 4, 80, 32, 32, mpp0 * 4)], axis=1)
        assert np.abs(whole.astype(int) - halves).max() <= 1


# -- series that are not the slide ----------------------------------------------------------------

def test_a_label_stored_before_the_pyramid_is_never_taken_for_the_slide(tmp_path):
    label = np.full((300, 200, 3), 20, np.uint8)
    slide = smooth_rgb(1024, 1536)
    with tifffile.TiffWriter(tmp_path / "label_first.tif") as w:
        w.write(label, description="label 200x300")
        w.write(slide, tile=(256, 256), subifds=1, resolution=(40000, 40000), resolutionunit="CENTIMETER")
        w.write(slide[::4, ::4].copy(), tile=(256, 256), subfiletype=1)
        w.write(np.full((100, 150, 3), 200, np.uint8), description="macro")
    with open_slide(str(tmp_path / "label_first.tif")) as s:
        assert s.info.dimensions == (1536, 1024) and s.info.level_count == 2
        assert np.array_equal(s.read_region(0, 0, 256, 256, 0.25), slide[:256, :256])


# -- pixels ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", ["tiffslide", "openslide"])
def test_transparent_pixels_are_white_background(reader):
    path = _case("rgba_roi.tif")
    rgba = tifffile.imread(path)
    transparent = rgba[..., 3] == 0
    assert transparent.any() and (rgba[transparent][:, :3] < 255).any()  # something else hides under alpha 0
    with open_slide(str(path), reader=reader) as s:
        rgb = s.read_level_region(0, 0, 0, *s.info.dimensions)
        assert (rgb[transparent] == 255).all()
        mask = tissue_mask(s).mask
    truth = np.load(str(path).replace(".tif", "_tissue.npy"))
    got = cv2.resize(mask.astype(np.uint8), truth.shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
    assert (got & truth).sum() / (got | truth).sum() >= 0.8


@pytest.mark.parametrize("name", ["gray8_brightfield.tif", "svs_uint16_gray.svs"])
@pytest.mark.parametrize("reader", ["auto", "openslide"])
def test_grayscale_and_16_bit_are_refused_by_every_reader(name, reader):
    with pytest.raises(SlideError, match="not a brightfield RGB slide"):
        open_slide(str(_case(name)), reader=reader)


@pytest.mark.parametrize("reader", ["tiffslide", "openslide"])
def test_jpeg2000_ycbcr_33003_comes_back_in_rgb_like_its_33005_twin(reader):
    ycc, rgb = _case("aperio_jp2k_33003_ycbcr.svs"), _case("aperio_jp2k_33005_rgb.svs")
    with open_slide(str(ycc), reader=reader) as s, open_slide(str(rgb)) as t:
        tile = s.read_region(600, 450, 128, 128, 0.5)
        assert tile.reshape(-1, 3).mean(0) == pytest.approx((214, 120, 178), abs=1.5)
        assert np.abs(tile.astype(int) - t.read_region(600, 450, 128, 128, 0.5)).mean() < 3
        a, b = tissue_mask(s).mask, tissue_mask(t).mask
    assert (a & b).sum() / (a | b).sum() > 0.95


def test_a_damaged_tile_is_named_by_its_level0_position():
    with open_slide(str(_case("corrupt_mid_tiles.tif"))) as s:
        s.read_region(0, 0, 512, 512, 0.5)  # undamaged tiles read fine
        with pytest.raises(SlideError, match=r"damaged tile at level-0 \(1280, 768\)"):
            s.read_region(512, 768, 1024, 256, 0.5)
    with open_slide(str(_case("corrupt_corner_all_levels.tif"))) as s, \
            pytest.raises(SlideError, match=r"damaged tile at level-0 \(0, 0\)"):
        s.thumbnail(8.0)


def test_a_cut_short_jpeg_tile_is_detected_not_decoded_into_grey(tmp_path):
    path = write_cut_short_jpeg(tmp_path / "cut.tif")  # the writer stopped half-way through tile (1, 1)
    with open_slide(str(path)) as s:
        s.read_region(0, 0, 256, 256, 0.5)
        with pytest.raises(SlideError, match=r"damaged tile at level-0 \(256, 256\).*end-of-image"):
            s.read_region(256, 256, 256, 256, 0.5)


def test_an_untiled_image_decodes_each_strip_once_and_huge_strips_are_refused(tmp_path, monkeypatch):
    img = smooth_rgb(600, 800)
    tifffile.imwrite(tmp_path / "strip.tif", img, rowsperstrip=600, compression="zlib",
                     resolution=(20000, 20000), resolutionunit="CENTIMETER")
    with open_slide(str(tmp_path / "strip.tif")) as s:
        for x in range(0, 800 - 64, 64):
            assert np.array_equal(s.read_region(x, 100, 64, 64, 0.5), img[100:164, x:x + 64])
        assert len(s._reader._cache) == 1  # one decode of the single strip served every tile
    monkeypatch.setattr(tiffslide_backend, "MAX_SEGMENT_BYTES", 600 * 800 * 3 - 1)
    with pytest.raises(SlideError, match="untiled image.*convert it to a tiled pyramidal TIFF"):
        open_slide(str(tmp_path / "strip.tif"))


# -- backends -------------------------------------------------------------------------------------

def _both_readable() -> list[Path]:
    files = sorted(glob.glob(str(SHARED_DATA / "slides" / "*.*")) + glob.glob(str(SHARED_DATA / "edge" / "*.*"))
                   + glob.glob(str(CASES / "*" / "*.tif")) + glob.glob(str(CASES / "*" / "*.svs")))
    return [Path(f) for f in files if "corrupt" not in f and "unreadable" not in f]


@pytest.mark.parametrize("path", _both_readable(), ids=lambda p: p.name)
def test_tiffslide_and_openslide_give_the_same_pixels(path):
    try:
        a, b = open_slide(str(path), mpp_override=0.5), open_slide(str(path), mpp_override=0.5, reader="openslide")
    except SlideError as exc:
        assert "not a brightfield RGB" in exc.reason  # refused alike by both (checked above)
        return
    with a, b:
        assert (a.info.reader, b.info.reader) == ("tiffslide", "openslide")
        assert a.info.dimensions == b.info.dimensions
        w, h = a.info.dimensions
        for x, y in ((0, 0), (w // 2 - 128, h // 2 - 128), (w - 200, h - 200)):
            ra, rb = a.read_region(x, y, 256, 256, 0.5), b.read_region(x, y, 256, 256, 0.5)
            assert np.abs(ra.astype(int) - rb).mean() < 1, (x, y)


def test_dicom_wsi_folder_opens_through_openslide(edge_dir):
    folder = edge_dir / "dicom-boxes"
    with open_slide(str(folder)) as s:
        assert s.info.reader == "openslide" and s.info.vendor == "dicom"
        assert s.mpp_xy == pytest.approx((0.499, 0.499)) and s.info.mpp_source == "metadata:openslide"
        assert s.read_region(0, 0, 16, 16, 0.499).shape == (16, 16, 3)


def test_unknown_reader_is_a_config_error(sample_slides):
    from slidegrid.errors import ConfigError

    with pytest.raises(ConfigError, match="--reader"):
        open_slide(str(sample_slides[0]), reader="bioformats")


def test_openslide_reads_s3_through_a_bounded_local_cache(s3_bucket, s3_upload, sample_slides, tmp_path,
                                                          monkeypatch):
    monkeypatch.setenv("SLIDEGRID_CACHE_DIR", str(tmp_path / "cache"))
    local = sample_slides[0]
    uri = s3_upload(local, f"{s3_bucket}/a/{local.name}")
    with open_slide(uri, reader="openslide") as s, open_slide(str(local)) as ref:
        assert s.info.reader == "openslide" and s.info.dimensions == ref.info.dimensions
        assert np.array_equal(s.read_region(100, 100, 128, 128, ref.mpp), ref.read_region(100, 100, 128, 128, ref.mpp))
    assert len(list((tmp_path / "cache").iterdir())) == 1
    monkeypatch.setenv("SLIDEGRID_CACHE_GB", str(local.stat().st_size / 2e9))
    uri2 = s3_upload(local, f"{s3_bucket}/b/{local.name}")
    with pytest.raises(SlideError, match=r"do not fit the local cache .*SLIDEGRID_CACHE_GB"):
        open_slide(uri2, reader="openslide")


def test_dicom_folder_with_tiffslide_names_the_format_and_info_sums_its_files(edge_dir):
    folder = edge_dir / "dicom-boxes"
    with pytest.raises(SlideError, match="DICOM WSI.*--reader auto or openslide"):
        open_slide(str(folder), reader="tiffslide")
    with open_slide(str(folder)) as s:
        assert s.info.file_size == sum(f.stat().st_size for f in folder.iterdir())


def test_fluorescence_slide_is_refused_by_the_brightfield_tissue_mask(edge_dir):
    with open_slide(str(edge_dir / "test3-dapi-2.ndpi")) as s, \
            pytest.raises(SlideError, match="fluorescence or dark-field"):
        tissue_mask(s)
