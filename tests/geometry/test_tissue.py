"""Tissue masks (DigiPathAI "Tissue mask generation"), pen ink left out of them, the overlay pictures and
`slidegrid tissue`."""

from __future__ import annotations

import glob

import cv2
import numpy as np
import pytest
from scipy import ndimage

from _pen_cases import PEN, PEN_CASES
from conftest import SHARED_DATA
from slidegrid.cli import main
from slidegrid.errors import ConfigError
from slidegrid.geometry.tissue import TissueConfig, TissueMask, tissue_mask, tissue_mask_from_rgb
from slidegrid.io.slides import open_slide
from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide
from slidegrid.viz import heatmap_overlay, overlay, save_png

GLASS = (242, 240, 244)
PINK = (214, 130, 190)  # eosin-like, saturation ~0.4
NO_CLEANUP = TissueConfig(closing_um=0, min_object_um2=0, min_hole_um2=0)


def _glass(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Glass with a little sensor noise, as a scanner sees it."""
    noise = np.random.default_rng(seed).integers(-4, 5, size=(h, w, 1))
    return np.clip(np.array(GLASS) + noise, 0, 255).astype(np.uint8)


def _write_tiff(path, rgb: np.ndarray, mpp: float = 0.5) -> str:
    """A plain tiled RGB TIFF with its mpp in the resolution tags."""
    import tifffile

    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb",
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    return str(path)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("tissue") / "t.tiff"
    truth = write_synthetic_slide(str(path), SyntheticSpec(width=2048, height=1536, seed=5, n_tumours=1))
    return str(path), truth


def test_real_sample_has_plausible_tissue(sample_slide):
    with open_slide(str(sample_slide)) as s:
        mask = tissue_mask(s)
        W, H = s.info.dimensions
        expected = (round(H * s.mpp / mask.mpp), round(W * s.mpp / mask.mpp))
    assert mask.mpp == 8.0 and mask.mask.dtype == bool and mask.mask.shape == expected
    # README: ~35-45% tissue on cmu-1-small-region; a wider band for other H&E samples.
    assert 0.15 < mask.fraction < 0.8


def test_synthetic_mask_matches_ground_truth(synth):
    path, truth = synth
    with open_slide(path) as s:
        mask = tissue_mask(s, TissueConfig(mpp=8.0))
    true_tissue, _ = truth.masks(8.0)
    assert mask.mask.shape == true_tissue.shape
    assert (mask.mask == true_tissue).mean() > 0.97
    assert mask.fraction == pytest.approx(true_tissue.mean(), abs=0.03)


def test_mask_resolution_follows_config(synth):
    path, _ = synth
    with open_slide(path) as s:
        coarse, fine = tissue_mask(s, TissueConfig(mpp=16.0)), tissue_mask(s, TissueConfig(mpp=4.0))
    assert coarse.mpp == 16.0 and coarse.mask.shape == (48, 64)  # 1024 x 768 µm
    assert fine.mpp == 4.0 and fine.mask.shape == (192, 256)
    assert coarse.fraction == pytest.approx(fine.fraction, abs=0.03)  # areas in µm hold at any mpp


def test_blank_slide_gives_an_empty_mask(tmp_path):
    path = tmp_path / "glass.tiff"
    write_synthetic_slide(str(path), SyntheticSpec(width=2048, height=2048, blank=True))
    with open_slide(str(path)) as s:
        assert not tissue_mask(s).mask.any()
        # even without any clean-up: Otsu must not split the glass noise into "tissue"
        assert not tissue_mask(s, NO_CLEANUP).mask.any()


def test_noisy_glass_gives_an_empty_mask():
    assert not tissue_mask_from_rgb(_glass(300, 300), 8.0, NO_CLEANUP).mask.any()


def test_black_regions_do_not_become_tissue(tmp_path):
    rgb = _glass(1024, 1024)
    rgb[:, :160] = 0  # scanner border
    rgb[700:800, 700:1000] = (20, 15, 25)  # out-of-focus black smear
    rgb[300:600, 300:600] = PINK
    with open_slide(_write_tiff(tmp_path / "black.tiff", rgb)) as s:
        mask = tissue_mask(s)  # 0.5 µm/px slide, mask at 8 µm/px: 1 mask px = 16 slide px
    assert not mask.mask[:, :8].any() and not mask.mask[45:49, 45:61].any()
    assert mask.mask[22:35, 22:35].all()  # the 7x7 median blur may round the square's corners
    assert mask.fraction == pytest.approx(300 * 300 / 1024**2, abs=0.02)


def test_tissue_cut_by_the_border_survives_closing():
    rgb = _glass(200, 200)
    rgb[:, :60] = PINK  # tissue running off the left and top/bottom edges
    mask = tissue_mask_from_rgb(rgb, 8.0, TissueConfig(closing_um=200.0))
    assert mask.mask[:, :58].all() and not mask.mask[:, 64:].any()


def test_small_objects_and_holes_are_sized_in_um():
    def image(scale: int) -> np.ndarray:
        rgb = _glass(100 * scale, 100 * scale)
        rgb[10 * scale:14 * scale, 10 * scale:14 * scale] = PINK  # dust speck: 32x32 µm at 8 µm/px
        rgb[40 * scale:90 * scale, 40 * scale:90 * scale] = PINK  # tissue: 400x400 µm
        rgb[50 * scale:54 * scale, 50 * scale:54 * scale] = GLASS  # small hole: 32x32 µm
        rgb[60 * scale:80 * scale, 60 * scale:80 * scale] = GLASS  # large hole: 160x160 µm
        return rgb

    config = TissueConfig(closing_um=0, min_object_um2=5000, min_hole_um2=5000, median_kernel=1)
    for scale, mpp in ((1, 8.0), (2, 4.0)):
        m = tissue_mask_from_rgb(image(scale), mpp, config).mask[::scale, ::scale]  # back to 8 µm/px indices
        assert not m[12, 12], "a speck under min_object_um2 must be removed"
        assert m[45, 45] and m[52, 52], "a hole under min_hole_um2 must be filled"
        assert not m[70, 70], "a hole over min_hole_um2 must stay glass"
    kept = tissue_mask_from_rgb(image(1), 8.0, TissueConfig(closing_um=0, min_object_um2=0, min_hole_um2=0,
                                                            median_kernel=1)).mask
    assert kept[12, 12] and not kept[52, 52]


def test_tiny_slide_does_not_fail(edge_dir):
    with open_slide(str(edge_dir / "small.svs")) as s:
        mask = tissue_mask(s)
    assert mask.mask.shape == (1, 1)


@pytest.mark.parametrize("kwargs, where", [
    ({"mpp": 0}, "--tissue-mpp"), ({"median_kernel": 4}, "median_kernel"), ({"black_threshold": 300},
                                                                             "black_threshold"),
    ({"min_saturation": 1.5}, "min_saturation"), ({"min_object_um2": -1}, "tissue config"),
    ({"ink_spread_um": -1}, "tissue config"), ({"min_ink_um2": -1}, "tissue config"),
])
def test_config_is_validated(kwargs, where):
    with pytest.raises(ConfigError) as err:
        TissueConfig(**kwargs)
    assert err.value.input == where


def test_overlay_tints_the_mask_and_draws_its_contour():
    rgb = np.full((40, 40, 3), 200, np.uint8)
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True  # 4x smaller than the image: resized with nearest neighbour
    out = overlay(rgb, mask, color=(0, 255, 0), alpha=0.5)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert tuple(out[20, 20]) == (100, 227, 100)  # inside: half image, half green
    assert tuple(out[8, 8]) == (0, 255, 0)  # the contour
    assert (out[:7] == 200).all() and (out[33:] == 200).all()  # outside untouched


def test_heatmap_is_transparent_where_zero():
    rgb = np.full((20, 20, 3), 255, np.uint8)
    prob = np.zeros((2, 2), np.float32)
    prob[0, 0], prob[1, 1] = 1.0, np.nan
    out = heatmap_overlay(rgb, prob, alpha=1.0, colormap=cv2.COLORMAP_JET)
    assert (out[10:] == 255).all() and (out[:10, 10:] == 255).all()
    assert tuple(out[5, 5]) == (128, 0, 0)  # JET at 1.0 is dark red


def test_save_png_round_trips(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    save_png(img, str(tmp_path / "sub" / "a.png"))
    assert (cv2.imread(str(tmp_path / "sub" / "a.png"))[..., ::-1] == img).all()
    save_png(img[..., 0], str(tmp_path / "grey.png"))
    assert (cv2.imread(str(tmp_path / "grey.png"), cv2.IMREAD_UNCHANGED) == img[..., 0]).all()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "grey.png", "sub"]  # no temp files left


def test_cli_tissue_writes_mask_and_overlay(synth, tmp_path, capsys):
    path, _ = synth
    assert main(["tissue", path, "--out", str(tmp_path / "out"), "--mpp", "16"]) == 0
    out = capsys.readouterr().out
    with open_slide(path) as s:
        expected = tissue_mask(s, TissueConfig(mpp=16.0))
    assert f"tissue fraction: {expected.fraction:.3f}" in out
    mask = cv2.imread(str(tmp_path / "out" / "t_tissue_mask.png"), cv2.IMREAD_UNCHANGED)
    assert ((mask > 0) == expected.mask).all()
    over = cv2.imread(str(tmp_path / "out" / "t_tissue_overlay.png"))
    assert over.shape == (*expected.mask.shape, 3)


def test_cli_tissue_writes_to_s3(synth, s3_bucket, capsys):
    import s3fs

    path, _ = synth
    assert main(["tissue", path, "--out", f"s3://{s3_bucket}/masks"]) == 0
    assert "tissue fraction:" in capsys.readouterr().out
    assert sorted(s3fs.S3FileSystem().ls(f"{s3_bucket}/masks")) == [
        f"{s3_bucket}/masks/t_tissue_mask.png", f"{s3_bucket}/masks/t_tissue_overlay.png"]


# -- pen ink is not tissue (issue 11, item 5) -------------------------------------------------------------------
# Pen cases (PEN, PEN_CASES: their inputs and truth) are in _pen_cases.py.
PCAM = SHARED_DATA / "realworld" / "patches" / "pcam"


def _pen_case(name: str) -> str:
    path = PEN / name
    if not path.is_file():
        pytest.skip(f"case input {name} not in {PEN}")
    return str(path)


def _with_and_without_ink(path: str, mpp_override: float | None = None) -> tuple[TissueMask, TissueMask]:
    with open_slide(path, mpp_override=mpp_override) as s:
        return tissue_mask(s), tissue_mask(s, TissueConfig(remove_ink=False))


@pytest.mark.parametrize("kind", list(PEN_CASES))
def test_pen_ink_is_not_tissue_and_the_tissue_beside_it_is(kind):
    name, ink_boxes, tissue_boxes, ink_fraction = PEN_CASES[kind]
    mask, old = _with_and_without_ink(_pen_case(name))
    for box in ink_boxes:
        assert old.mask[box].mean() > 0.5  # what went wrong before: the stroke was "tissue"
        assert not mask.mask[box].any() and mask.ink[box].all()
    for box in tissue_boxes:
        assert mask.mask[box].all() and not mask.ink[box].any()
    assert not (mask.mask & mask.ink).any()
    assert mask.ink_fraction == pytest.approx(ink_fraction, abs=0.02)  # the strokes' share of each crop
    assert old.ink is None and old.ink_fraction == 0.0


def test_red_pen_no_longer_takes_the_mask():
    mask, old = _with_and_without_ink(_pen_case("pen_red_on_tissue.tif"))
    # The case README: today the mask is 87% ink. Now none of it is, and the tissue found grows from 20% to 55%
    # of the crop (the purple tissue on the right half, its fat holes and the ink-tinted fat left out).
    assert (old.mask & mask.ink).sum() / old.mask.sum() > 0.85
    assert old.fraction == pytest.approx(0.197, abs=0.01) and mask.fraction == pytest.approx(0.55, abs=0.03)
    assert (mask.mask & old.mask).sum() < 0.01 * old.mask.sum()


def test_a_tile_of_pure_green_ink_has_no_tissue():
    # tile_mosaic.tif: three 256 µm tiles side by side (32 mask px each): green pen on glass, a thin marker line on
    # glass, almost-white glass. Today the green tile is 92% "tissue".
    mask, old = _with_and_without_ink(_pen_case("tile_mosaic.tif"))
    assert mask.mask.shape == (32, 96)
    assert old.mask[:, :32].mean() > 0.9
    assert not mask.mask.any()
    assert mask.ink[:, :32].mean() > 0.7 and not mask.ink[:, 32:].any()  # the line vanishes at 8 µm/px


def _black_marker(rgb: np.ndarray, peak_od: float) -> tuple[np.ndarray, np.ndarray]:
    """A black marker stroke over a real image, by Beer-Lambert: the ink's optical density adds to the stain's,
    so transmitted light is multiplied by 10^-OD. A 250 µm wide line with soft edges, slightly bluish like most
    black markers. Returns the marked image and the ink coverage in [0, 1]."""
    cover = np.zeros(rgb.shape[:2], np.float32)
    h, w = rgb.shape[:2]
    cv2.line(cover, (0, round(h * 0.73)), (w, round(h * 0.676)), 1.0, thickness=125)
    cover = cv2.GaussianBlur(cover, (0, 0), 8)
    od = cover[..., None] * np.array([1.0, 1.0, 0.9], np.float32) * peak_od
    return np.clip(rgb * 10 ** -od, 0, 255).astype(np.uint8), cover


def test_black_marker_is_not_tissue_and_the_tissue_beside_it_is(sample_slides, tmp_path):
    # A worn black marker (optical density 0.6: glass under it is ~60 grey, too light for DigiPathAI's
    # black-to-white step) drawn across the real tissue of CMU-1 at 2 µm/px; the clean image is the truth.
    cmu = [p for p in sample_slides if p.name == "cmu-1-small-region.svs"]
    if not cmu:
        pytest.skip("cmu-1-small-region.svs is not among the sample slides")
    with open_slide(str(cmu[0])) as s:
        rgb = s.thumbnail(2.0)
    marked, cover = _black_marker(rgb, 0.6)
    with open_slide(_write_tiff(tmp_path / "clean.tiff", rgb, mpp=2.0)) as s:
        clean = tissue_mask(s)
    with open_slide(_write_tiff(tmp_path / "marked.tiff", marked, mpp=2.0)) as s:
        mask = tissue_mask(s)
    assert mask.mask.shape == clean.mask.shape == (185, 138)
    on_glass, on_tissue = np.s_[129:139, 2:20], np.s_[125:135, 50:80]  # inside the stroke's core
    assert not clean.mask[on_glass].any() and mask.ink[on_glass].all()
    assert clean.mask[on_tissue].all() and not mask.mask[on_tissue].any()
    for beside in (np.s_[92:106, 55:75], np.s_[150:165, 45:75]):  # tissue 35-180 µm from the stroke's edges
        assert clean.mask[beside].all() and mask.mask[beside].all()
    # Away from the stroke (over 100 µm from any ink) nothing changes, and no ink is found there.
    ink8 = cv2.resize(cover, clean.mask.shape[::-1], interpolation=cv2.INTER_AREA) > 0.02
    far = ndimage.distance_transform_edt(~ink8) * clean.mpp > 100
    assert (mask.mask == clean.mask)[far].all() and not mask.ink[far].any()
    assert 0.08 < mask.ink_fraction < 0.2 and clean.ink_fraction == 0.0


def test_faint_tissue_is_found():
    truth = np.load(_pen_case("faint_tissue_mask.npy"))
    mask, old = _with_and_without_ink(_pen_case("faint_tissue.tif"))
    assert mask.mask.shape == truth.shape
    iou = (mask.mask & truth).sum() / (mask.mask | truth).sum()
    assert iou >= 0.8  # the case README; 0.838 at the time of writing
    assert (mask.mask == old.mask).all() and mask.ink_fraction == 0.0


def test_blank_glass_gives_an_empty_mask_and_no_ink():
    truth = np.load(_pen_case("blank_glass_mask.npy"))
    mask, _ = _with_and_without_ink(_pen_case("blank_glass.tif"))
    assert not truth.any()
    assert mask.mask.shape == truth.shape and not mask.mask.any() and mask.ink_fraction == 0.0


@pytest.mark.parametrize("case", ["sample", "tcga-frozen"])
def test_real_h_and_e_keeps_its_mask(case, request):
    # Eosin is pink-red and haematoxylin blue-purple: the ink filter must not take either. The TCGA frozen
    # section records no mpp; its README says to pass 0.5.
    if case == "sample":
        paths = [(str(p), None) for p in request.getfixturevalue("sample_slides")]
    else:
        paths = [(str(request.getfixturevalue("edge_dir") / "tcga-cr-7395-01a-01-ts1.svs"), 0.5)]
    for path, override in paths:
        mask, old = _with_and_without_ink(path, override)
        assert (mask.mask & old.mask).sum() >= 0.98 * old.mask.sum(), path
        assert mask.ink_fraction < 0.001, path


def test_real_h_and_e_patches_are_not_ink():
    # All 8,000 PatchCamelyon patches (real H&E lymph node, ~0.97 µm/px), each shrunk to 12 px (7.75 µm/px) and
    # laid side by side as one 80 x 100 patch "slide": dense lymphocytes, blood, fat, folds. The few patches the
    # filter takes are black or grey glass artefacts, not stained tissue.
    files = sorted(glob.glob(str(PCAM / "*" / "*" / "*.jpg")))
    if len(files) != 8000:
        pytest.skip(f"the 8,000 PCam patches are not in {PCAM}")
    tiles = np.stack([cv2.resize(cv2.imread(f)[..., ::-1], (12, 12), interpolation=cv2.INTER_AREA) for f in files])
    mosaic = tiles.reshape(80, 100, 12, 12, 3).transpose(0, 2, 1, 3, 4).reshape(960, 1200, 3)
    mpp = 93.0 / 12
    mask = tissue_mask_from_rgb(mosaic, mpp)
    old = tissue_mask_from_rgb(mosaic, mpp, TissueConfig(remove_ink=False))
    assert mask.ink_fraction < 0.001
    assert (mask.mask & old.mask).sum() >= 0.999 * old.mask.sum()


def test_synthetic_slides_lose_nothing_to_the_ink_filter(synth, tmp_path):
    paths = [synth[0]]
    for seed in (11, 23):
        path = tmp_path / f"s{seed}.tiff"
        write_synthetic_slide(str(path), SyntheticSpec(width=2048, height=1536, seed=seed, n_tumours=2))
        paths.append(str(path))
    for path in paths:
        mask, old = _with_and_without_ink(path)
        assert (mask.mask == old.mask).all() and mask.ink_fraction == 0.0
