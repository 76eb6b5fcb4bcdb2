"""Synthetic slides: real pyramids tiffslide opens, consistent levels, determinism, ground truth, memory."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import tiffslide

from slidegrid.errors import SlideError
from slidegrid.io.annotations import rasterize, read_annotations
from slidegrid.io.slides import open_slide
from slidegrid.synth.slides import SyntheticSpec, synthesize_archive, write_synthetic_slide


def test_pyramid_levels_mpp_and_consistency(tmp_path):
    path = tmp_path / "s.tiff"
    write_synthetic_slide(str(path), SyntheticSpec(width=5000, height=4000, mpp=0.25, seed=3))
    ts = tiffslide.TiffSlide(str(path))
    assert ts.dimensions == (5000, 4000)
    assert ts.level_downsamples[:2] == (1.0, 4.0) and ts.level_count >= 2
    assert float(ts.properties["tiffslide.mpp-x"]) == 0.25
    l0 = ts.read_region((1000, 1000), 0, (1024, 1024), as_array=True)[..., :3]
    l1 = ts.read_region((1000, 1000), 1, (256, 256), as_array=True)[..., :3]
    import cv2

    down = cv2.resize(l0, (256, 256), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(down - l1).mean() < 12


def test_slide_without_mpp_and_all_glass_slide(tmp_path):
    write_synthetic_slide(str(tmp_path / "nompp.tiff"), SyntheticSpec(width=1024, height=1024, write_mpp=False))
    assert tiffslide.TiffSlide(str(tmp_path / "nompp.tiff")).properties["tiffslide.mpp-x"] is None
    with pytest.raises(SlideError, match="mpp-override"):
        _ = open_slide(str(tmp_path / "nompp.tiff")).mpp
    assert open_slide(str(tmp_path / "nompp.tiff"), mpp_override=0.5).mpp == 0.5

    truth = write_synthetic_slide(str(tmp_path / "glass.tiff"), SyntheticSpec(width=1024, height=1024, blank=True))
    assert truth.label == 0 and truth.tissue_area_um2 == 0 and not truth.tumour_polygons
    pixels = tiffslide.TiffSlide(str(tmp_path / "glass.tiff")).read_region((0, 0), 0, (1024, 1024), as_array=True)
    assert pixels[..., :3].min() >= 220  # near-white glass everywhere, nothing tissue-coloured


def test_deterministic_per_seed(tmp_path):
    digests = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_synthetic_slide(str(tmp_path / f"{name}.tiff"), SyntheticSpec(width=1024, height=1024, seed=seed))
        digests.append(hashlib.sha256((tmp_path / f"{name}.tiff").read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_tumour_truth_and_texture(tmp_path):
    truth = write_synthetic_slide(str(tmp_path / "t.tiff"), SyntheticSpec(width=4096, height=3072, seed=1,
                                                                             n_tumours=1))
    assert truth.label == 1 and truth.tumour_area_um2 > 0 and truth.tissue_area_um2 > truth.tumour_area_um2
    normal = write_synthetic_slide(str(tmp_path / "n.tiff"), SyntheticSpec(width=1024, height=1024, n_tumours=0))
    assert normal.label == 0 and normal.tumour_area_um2 == 0
    ts = tiffslide.TiffSlide(str(tmp_path / "t.tiff"))
    poly = truth.tumour_polygons[0]
    cx, cy = poly.mean(axis=0)
    tumour = ts.read_region((int(cx) - 32, int(cy) - 32), 0, (64, 64), as_array=True)[..., :3].astype(float)
    assert tumour.mean() < 200  # dense dark nuclei, darker than stroma and glass


def test_archive_cohort_and_geojson(tmp_path):
    cohort = synthesize_archive(str(tmp_path), n=4, size=1024, seed=2, progress=False)
    df = pd.read_csv(cohort)
    assert list(df.columns[:3]) == ["slide_id", "uri", "label"] and df["label"].sum() == 2
    # Two slides a patient, one fold a patient (a split by fold never separates a patient's slides).
    assert df.groupby("patient_id")["fold"].agg(["size", "nunique"]).values.tolist() == [[2, 1], [2, 1]]
    assert sorted(df["fold"].unique()) == [0, 1]
    row = df[df["label"] == 1].iloc[0]
    anns = read_annotations(str(tmp_path / row["annotation"]))
    assert anns and anns[0].label == "Tumor"
    mask = rasterize(anns, (1024, 768), 0.5, 8.0)
    png = __import__("cv2").imread(str(tmp_path / "masks" / f"{row['slide_id']}.png"), 0) > 0
    inter = (mask & png).sum()
    assert 2 * inter / (mask.sum() + png.sum()) > 0.8  # GeoJSON and PNG describe the same tumour


def test_writing_a_large_slide_uses_bounded_memory(tmp_path):
    import tracemalloc

    peaks = []
    for side in (4000, 16000):  # 16x the pixels
        tracemalloc.start()
        write_synthetic_slide(str(tmp_path / f"{side}.tiff"), SyntheticSpec(width=side, height=side, seed=4))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0] + 20e6, f"peak grew with the slide: {peaks}"
    assert peaks[1] < 16000 * 16000 * 3 / 4  # a quarter of the full RGB level 0


def test_lesions_keep_the_asked_radius_and_lie_inside_their_tissue():
    """A lesion takes the radius drawn from tumour_radius_um (uniform), shrunk only where its blob is too small
    to hold it, and its whole boundary lies inside the blob (it used to be capped at 0.3 of the blob's radius:
    a 40-500 µm range gave 80-250 µm lesions on a 4096-px slide)."""
    from slidegrid.synth.slides import layout

    radii = []
    for seed in range(60):
        spec = SyntheticSpec(width=4096, height=3072, mpp=1.0, seed=seed, tumour_radius_um=(40, 400))
        tissue, (lesion,) = layout(spec)
        boundary = lesion.polygon(256)
        assert tissue[0].contains(boundary[:, 0], boundary[:, 1]).all(), f"seed {seed}: lesion leaves its blob"
        radii.append(lesion.radius)
    radii = np.array(radii)
    assert radii.min() >= 40 and radii.max() <= 400
    # Every blob of a 4096 x 3072 slide holds a 400-µm lesion at 1 µm/px, so the draws are the asked uniform ones.
    assert radii.max() > 350 and np.mean(radii > 250) > 0.3
    # A blob too small for the asked radius shrinks the lesion to fit (inside it, as above).
    tissue, (lesion,) = layout(SyntheticSpec(width=1024, height=1024, mpp=1.0, seed=0, tumour_radius_um=(900, 1000)))
    assert lesion.radius < 900
    assert tissue[0].contains(*lesion.polygon(256).T).all()
