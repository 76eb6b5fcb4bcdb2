"""Tissue masks (DigiPathAI "Tissue mask generation"), the overlay pictures and `slidegrid tissue`."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slidegrid.cli import main
from slidegrid.errors import ConfigError
from slidegrid.slides import open_slide
from slidegrid.synthetic import SyntheticSpec, write_synthetic_slide
from slidegrid.tissue import TissueConfig, tissue_mask, tissue_mask_from_rgb
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
