"""Slide segmentation pieces without a Ray cluster: patch streaming rows, augmentation, overlap stitching,
TTA / ensemble variance, inference geometry, pN rules (Table 3), tumour burden, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from slidegrid.analysis.pn_stage import pn_stage
from slidegrid.analysis.tumour_burden import tumour_burden
from slidegrid.cli import main
from slidegrid.errors import ConfigError
from slidegrid.models import build_model
from slidegrid.models.seg_ensemble import SegmentationEnsemble, load_ensemble, save_ensemble
from slidegrid.segment import SegmentActor, SegmentConfig, SlideStitcher, resolve_geometry
from slidegrid.stitching import ensemble_predict
from slidegrid.train.segmentation.config import TINY_SMP, SegTrainConfig
from slidegrid.train.segmentation.data import ColourJitter, PatchSpec, augment, patch_items, read_patches

SPEC = {"mpps": [2.0], "patch_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3, "names": ["unet-densenet121"]}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from slidegrid.synth.slides import synthesize_archive

    out = tmp_path_factory.mktemp("seg-synth")
    return synthesize_archive(str(out), n=2, size=2048, seed=3, tumour_rate=1.0, n_folds=2, progress=False)


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet-densenet121", 3, 2, **TINY_SMP).eval()


# -- training patches -----------------------------------------------------------------------------------

def test_patches_are_class_balanced_and_masks_follow_the_any_pixel_rule(synth):
    from slidegrid.io.archive import read_cohort

    rec = read_cohort(synth)[0].to_dict()
    spec = PatchSpec(patch_size=64, mpps=(2.0,), perturb_radius=0, augment=False)
    rows = read_patches(patch_items([rec], 16, seed=0)[0], spec)
    flags = [r["tumour"] for r in rows]
    assert len(rows) == 16 and sum(flags) == 8
    for r in rows:
        assert r["image"].shape == (64, 64, 3) and r["mask"].shape == (64, 64)
        assert bool(r["mask"].any()) == r["tumour"]  # unperturbed: the label is exactly "any tumour pixel"
    # A fixed seed repeats positions (validation); MRN rows carry one tile per resolution.
    again = read_patches(patch_items([rec], 16, seed=0)[0], spec)
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(rows, again))
    mrn = read_patches(patch_items([rec], 2, seed=0)[0], PatchSpec(patch_size=64, mpps=(2.0, 4.0), augment=True))
    assert mrn[0]["image"].shape == (2, 64, 64, 3) and mrn[0]["mask"].shape == (64, 64)


def test_augmentation_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), np.uint8)
    mask[2:10, 5:30] = 1
    images = np.repeat((mask * 255)[None, ..., None], 3, axis=-1).repeat(2, axis=0)  # 2 resolutions
    no_colour = ColourJitter(brightness=0, contrast=0, saturation=0, hue=0, blur_probability=0)
    seen = set()
    for _ in range(12):
        img, m = augment(images, mask, rng, no_colour)
        assert np.array_equal(img[0, ..., 0] > 127, m.astype(bool)) and np.array_equal(img[0], img[1])
        seen.add(m.tobytes())
    assert len(seen) > 3  # flips and rotations really happen
    img, _ = augment(images, mask, np.random.default_rng(1))
    assert img.dtype == np.uint8 and not np.array_equal(img, images)  # colour jitter / blur change pixels


# -- stitching, uncertainty ---------------------------------------------------------------------------

def _ramp_heatmap(stride: int, weighting: str, tile: int = 32, width: int = 160) -> np.ndarray:
    """Stitch a model with a strong tile-border artefact: its output ramps 0 -> 1 across every tile."""
    from slidegrid.stitching import tile_positions

    ramp = np.broadcast_to(np.linspace(0, 1, tile, dtype=np.float32), (3, tile, tile))
    positions = tile_positions(width, tile, tile, stride)
    st = SlideStitcher(len(positions), (tile, width), factor=1, weighting=weighting)
    for i, (x, y) in enumerate(positions):
        st.add(i, x, y, ramp)
    assert st.complete
    return st.acc.result()[0]


def test_overlap_averaging_removes_tile_seams():
    def worst_step(h: np.ndarray) -> float:
        return float(np.abs(np.diff(h[:, 2:-2], axis=1)).max())

    seams = worst_step(_ramp_heatmap(32, "gaussian"))  # stride = tile: every border is a jump of ~1
    half_uniform = worst_step(_ramp_heatmap(16, "uniform"))
    half_gaussian = worst_step(_ramp_heatmap(16, "gaussian"))
    assert seams > 0.9
    assert half_uniform < 0.6 * seams
    assert half_gaussian < 0.1  # continuous: no step much above the ramp's own slope (1/32)


def test_tta_and_ensemble_variance_maps():
    member = _tiny()
    x = torch.rand(2, 3, 32, 32)
    same = ensemble_predict([member, copy.deepcopy(member)], x, tta=True)
    assert same["mean"].shape == same["aleatoric"].shape == same["epistemic"].shape == (2, 2, 32, 32)
    assert torch.count_nonzero(same["epistemic"]) == 0
    assert same["aleatoric"].max() > 0  # an untrained net is not rotation invariant
    other = _tiny()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert ensemble_predict([member, other], x, tta=False)["epistemic"].max() > 0
    # Through the inference actor: maps down-scaled to the heatmap, epistemic zero for identical members.
    actor = SegmentActor(SegmentationEnsemble([member, copy.deepcopy(member)], SPEC), tta=True, factor=4)
    out = actor({"image": np.random.default_rng(0).integers(0, 255, (3, 1, 64, 64, 3), dtype=np.uint8),
                 "slide_id": np.array(["a"] * 3)})
    assert out["maps"].shape == (3, 3, 16, 16)
    assert np.all(out["maps"][:, 2] == 0) and out["maps"][:, 1].max() > 0
    assert np.all((out["maps"][:, 0] >= 0) & (out["maps"][:, 0] <= 1))


def test_ensemble_checkpoint_round_trip(tmp_path):
    member = _tiny()
    path = str(tmp_path / "ensemble.pt")
    save_ensemble(path, [{"name": "unet-densenet121", "kwargs": dict(TINY_SMP), "state": member.state_dict()}], SPEC)
    loaded = load_ensemble(path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.members[0](x), member(x))
    assert loaded.mpps == (2.0,) and loaded.subset(1).spec == SPEC
    with pytest.raises(ConfigError, match="--members"):
        loaded.subset(2)


# -- geometry and bad input ----------------------------------------------------------------------------

def test_inference_geometry_defaults_and_errors():
    cfg = SegmentConfig(input="x", model="m", out="o", heatmap_mpp=8.0)
    g = resolve_geometry(cfg, SPEC, 32)
    assert (g.tile, g.stride, g.factor) == (256, 128, 4)  # 4x the training patch, 50 % overlap
    with pytest.raises(ConfigError, match="--heatmap-mpp"):
        resolve_geometry(SegmentConfig(input="x", model="m", out="o", heatmap_mpp=5.0), SPEC, 32)
    with pytest.raises(ConfigError, match="--tile-size"):
        resolve_geometry(SegmentConfig(input="x", model="m", out="o", tile_size=100), SPEC, 32)
    with pytest.raises(ConfigError, match="--weighting"):
        SegmentConfig(input="x", model="m", out="o", weighting="max")
    with pytest.raises(ConfigError, match="--model"):
        SegTrainConfig(cohort="c", out="o", model="unet-vgg")
    with pytest.raises(ConfigError, match="--members"):
        SegTrainConfig(cohort="c", out="o", members=("unet-densenet121", "fcn"))


def test_cli_names_the_bad_input(tmp_path, capsys, synth):
    missing = str(tmp_path / "nope.pt")
    assert main(["segment", synth, "--model", missing, "--out", str(tmp_path / "o")]) == 2
    assert f"error: {missing}: model checkpoint not found" in capsys.readouterr().err
    cohort = tmp_path / "c.csv"
    cohort.write_text("slide_id,uri,fold\na,a.tiff,0\nb,b.tiff,1\n")
    assert main(["train-seg", "--cohort", str(cohort), "--out", str(tmp_path / "t"), "--tiny"]) == 2
    assert f"error: {cohort}: no slide has an `annotation`" in capsys.readouterr().err


# -- downstream analysis --------------------------------------------------------------------------------

@pytest.mark.parametrize("nodes, stage", [
    (["negative"] * 5, "pN0"),
    (["itc", "negative", "itc"], "pN0(i+)"),
    (["micro", "itc", "negative"], "pN1mi"),
    (["micro"] * 5, "pN1mi"),  # many micro-metastases, no macro: still pN1mi
    (["macro", "negative"], "pN1"),
    (["macro", "micro", "micro", "itc", "itc"], "pN1"),  # 3 metastatic nodes (ITCs do not count)
    (["macro", "micro", "micro", "micro"], "pN2"),  # 4 metastatic nodes
    (["macro"] * 9, "pN2"),
])
def test_pn_stage_follows_table_3(nodes, stage):
    assert pn_stage(nodes) == stage


def test_pn_stage_bad_input():
    with pytest.raises(ConfigError, match="at least one lymph node"):
        pn_stage([])
    with pytest.raises(ConfigError, match="Table 3 stops"):
        pn_stage(["macro"] * 10)


def test_tumour_burden_of_a_known_layout():
    tissue = np.zeros((100, 100), bool)
    tissue[5:95, 5:95] = True
    viable = np.zeros((100, 100), np.float32)
    viable[20:40, 20:40] = 0.9  # two viable blocks 20 x 20 whose convex hull is the 20 x 60 rectangle
    viable[20:40, 60:80] = 0.8
    viable[70, 70] = 0.99  # a lone false-positive pixel the clean-up must drop
    result = tumour_burden(viable, tissue)
    assert result.viable_area == pytest.approx(800, rel=0.02)  # the opening rounds the blocks' corners
    assert not result.viable[70, 70]
    assert result.whole_area == pytest.approx(1200, rel=0.02)
    assert result.burden == pytest.approx(800 / 1200, rel=0.02)
