"""Real-texture synthetic slides (`synth --texture-from`): only patches of the requested split, exact pixels at
lattice positions, cell-quantized ground truth that matches the patches' labels, mpp read back, one-line errors."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_DATA
from slidegrid.cli import main
from slidegrid.io.annotations import read_annotations
from slidegrid.io.slides import open_slide
from slidegrid.synth import texture
from slidegrid.synth.slides import MASK_MPP, SyntheticSpec, write_synthetic_slide
from slidegrid.synth.texture import MosaicRenderer, load_patch_bank

PCAM = SHARED_DATA / "realworld" / "patches" / "pcam"
CELL = 96
MPP = 0.97

pytestmark = pytest.mark.skipif(not (PCAM / "index.csv").exists(), reason=f"no PCam patches in {PCAM}")


def _digest(pixels: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def pcam_hashes() -> dict[str, dict[str, int]]:
    """split -> {sha1 of the decoded RGB pixels: label}, every file of index.csv decoded as the mosaic decodes
    (OpenCV), duplicates included."""
    out: dict[str, dict[str, int]] = {"train": {}, "valid": {}, "test": {}}
    with open(PCAM / "index.csv", newline="") as f:
        for row in csv.DictReader(f):
            img = cv2.cvtColor(cv2.imread(str(PCAM / row["path"]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            out[row["split"]][_digest(img)] = int(row["label"])
    splits = list(out)
    for i, a in enumerate(splits):  # otherwise "in no other split" would test nothing
        for b in splits[i + 1:]:
            assert not set(out[a]) & set(out[b]), f"{a} and {b} share decoded patches"
    return out


def _whole_cells(level0: np.ndarray):
    """(row, col, pixels) of every lattice cell lying wholly inside the slide."""
    h, w = level0.shape[:2]
    for j in range(h // CELL):
        for i in range(w // CELL):
            yield j, i, level0[j * CELL:(j + 1) * CELL, i * CELL:(i + 1) * CELL]


@pytest.mark.parametrize("reader", ["tiffslide", "openslide"])
def test_slides_of_a_split_hold_only_that_splits_patches(tmp_path, pcam_hashes, reader):
    bank = load_patch_bank(str(PCAM), "valid")
    spec = SyntheticSpec(width=1536, height=1152, mpp=MPP, seed=11, n_tumours=3)
    truth = write_synthetic_slide(str(tmp_path / "v.tiff"), spec, texture=bank)
    with open_slide(str(tmp_path / "v.tiff"), reader=reader) as slide:
        assert slide.mpp == pytest.approx(MPP, abs=1e-9)  # µm/px from the TIFF resolution tags
        level0 = slide.read_level_region(0, 0, 0, 1536, 1152)
    others = set(pcam_hashes["train"]) | set(pcam_hashes["test"])
    labels, patch_cells = [], 0
    for j, i, px in _whole_cells(level0):
        h = _digest(px)
        assert h not in others, f"cell ({j}, {i}) holds a patch of another split"
        if truth.cells[j, i]:
            assert h in pcam_hashes["valid"], f"tissue cell ({j}, {i}) is not a valid-split patch, pixel for pixel"
            labels.append(pcam_hashes["valid"][h])
            patch_cells += 1
        else:  # glass: near white, no patch
            assert h not in pcam_hashes["valid"] and px.min() >= 220
    assert patch_cells > 30 and set(labels) == {0, 1}  # a tumour slide shows both classes
    # the pyramid's level 1 is level 0's exact 4 x 4 box mean (lossless throughout)
    with open_slide(str(tmp_path / "v.tiff"), reader="tiffslide") as slide:
        level1 = slide.read_level_region(0, 0, 1, 384, 288)
    assert np.array_equal(level1, cv2.resize(level0, (384, 288), interpolation=cv2.INTER_AREA))


def test_archive_ground_truth_follows_the_patches(tmp_path, pcam_hashes, capsys):
    out = tmp_path / "arch"
    assert main(["synth", str(out), "--n", "2", "--size", "1536", "--seed", "4", "--tumour-rate", "0.5",
                 "--texture-from", str(PCAM), "--split", "test", "--no-progress"]) == 0
    assert "tumour cells:" in capsys.readouterr().out
    cohort = pd.read_csv(out / "cohort.csv", keep_default_na=False)
    assert list(cohort.columns) == ["slide_id", "uri", "label", "fold", "annotation", "patient_id",
                                    "tumour_area_um2", "texture_split"]
    assert set(cohort["texture_split"]) == {"test"} and sorted(cohort["label"]) == [0, 1]
    for row in cohort.itertuples():
        with open_slide(str(out / row.uri)) as slide:
            assert slide.mpp == pytest.approx(MPP, abs=1e-9)
            w, h = slide.info.dimensions
            level0 = slide.read_level_region(0, 0, 0, w, h)
        png = cv2.imread(str(out / "masks" / f"{row.slide_id}.png"), cv2.IMREAD_GRAYSCALE) > 0
        anns = read_annotations(str(out / row.annotation)) if row.annotation else []
        n_tumour = 0
        for j, i, px in _whole_cells(level0):
            label = pcam_hashes["test"].get(_digest(px))
            cx, cy = (i + 0.5) * CELL, (j + 0.5) * CELL
            in_png = png[int(cy * MPP / MASK_MPP), int(cx * MPP / MASK_MPP)]
            in_geojson = any(cv2.pointPolygonTest(a.exterior.astype(np.float32), (cx, cy), False) > 0
                             and not any(cv2.pointPolygonTest(hole.astype(np.float32), (cx, cy), False) >= 0
                                         for hole in a.holes) for a in anns)
            # tumour in the PNG and the GeoJSON exactly where a label-1 patch lies; normal tissue and glass not
            assert in_png == in_geojson == (label == 1), f"{row.slide_id} cell ({j}, {i}): patch label {label}"
            n_tumour += label == 1
        assert row.label == int(n_tumour > 0)
        assert row.tumour_area_um2 == pytest.approx(n_tumour * (CELL * MPP) ** 2, abs=0.1)
    report = (out / "texture.json").read_text()
    assert '"split": "test"' in report and '"skipped_duplicates": 53' in report


def test_lower_levels_do_not_depend_on_the_block_size(monkeypatch):
    bank = load_patch_bank(str(PCAM), "train")
    render = MosaicRenderer(SyntheticSpec(width=2048, height=1536, mpp=MPP, seed=2, n_tumours=1), bank)
    whole = render.tile(4, 0, 0)
    monkeypatch.setattr(texture, "_BLOCK", 48)  # 12 x 12 output px per block, ragged at the edge
    assert np.array_equal(render.tile(4, 0, 0), whole) and whole.std() > 5  # tissue, not glass only
    # a window wider than the glass period (gathered) equals two narrower ones (sliced)
    wide = render.level0(700, 500, 1200, 200)
    assert np.array_equal(wide, np.hstack([render.level0(700, 500, 600, 200), render.level0(1300, 500, 600, 200)]))


def _patch_folder(root: Path, classes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    for label in classes:
        (root / "train" / str(label)).mkdir(parents=True)
        for k in range(3):
            img = rng.integers(0, 200, (CELL, CELL, 3), dtype=np.uint8)
            cv2.imwrite(str(root / "train" / str(label) / f"p{k}.png"), img)


def test_a_folder_without_index_csv(tmp_path):
    _patch_folder(tmp_path / "p", (0, 1))
    bank = load_patch_bank(str(tmp_path / "p"), "train", mpp=0.5)
    assert bank.size == CELL and sorted(np.bincount(bank.labels)) == [3, 3]
    spec = SyntheticSpec(width=1024, height=768, mpp=0.5, n_tumours=1, seed=3)
    truth = write_synthetic_slide(str(tmp_path / "s.tiff"), spec, texture=bank)
    assert truth.label == 1 and truth.cell_px == CELL
    assert set(np.unique(truth.patches[truth.cells == 2])) <= set(bank.of_label(1))
    assert set(np.unique(truth.patches[truth.cells == 1])) <= set(bank.of_label(0))
    write_synthetic_slide(str(tmp_path / "again.tiff"), spec, texture=bank)  # the patch draw is seeded
    assert (tmp_path / "s.tiff").read_bytes() == (tmp_path / "again.tiff").read_bytes()


@pytest.mark.parametrize("case", ["bad-split", "no-split", "no-tumour-patches", "mpp-mismatch", "split-alone",
                                  "root-too-high", "radius-reversed", "radius-negative"])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys, case):
    root = PCAM
    args = ["--split", "valid"]
    if case == "root-too-high":  # the folder holding the patch set, not the set
        root = PCAM.parent
        expect = f"error: {PCAM}: read as a class folder, but it holds folders (test, train, valid); if it is a " \
                 "patch set itself, pass it as the root"
    elif case.startswith("radius"):
        args += ["--tumour-radius-um", *(("500", "40") if case == "radius-reversed" else ("-40", "60"))]
        expect = "error: --tumour-radius-um: "
    elif case == "bad-split":
        args = ["--split", "validation"]
        expect = f"error: {PCAM}: no split 'validation' here (splits: test, train, valid); pass --split"
    elif case == "no-split":
        args = []
        expect = "error: --split: required with --texture-from"
    elif case == "no-tumour-patches":
        root = tmp_path / "normal-only"
        _patch_folder(root, (0,))
        args = ["--split", "train"]
        expect = f"error: {root}: split 'train' has no tumour patches"
    elif case == "mpp-mismatch":
        args += ["--mpp", "0.5"]
        expect = "error: --mpp: 0.5 µm/px differs from the patches' 0.97"
    argv = ["synth", str(tmp_path / "out"), "--n", "2", "--size", "1024", "--no-progress", *args]
    if case == "split-alone":
        expect = "error: --split: only means something with --texture-from"
    else:
        argv += ["--texture-from", str(root)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(expect), err
    assert not (tmp_path / "out").exists()  # refused before writing anything


def test_lesion_size_is_controlled_down_to_one_cell():
    """NIC Fig. 6/8 bins slides by lesion size, so the asked radius must reach the slide: a lesion far smaller
    than a patch cell still holds its centre cell (exactly one tumour cell), and a larger one has the asked
    size up to the cell quantization (equivalent radius of its tumour cells within a cell's width)."""
    bank = load_patch_bank(str(PCAM), "train")
    one = MosaicRenderer(SyntheticSpec(width=4096, height=3072, mpp=MPP, seed=3, tumour_radius_um=(10, 10)), bank)
    assert int((one.truth().cells == 2).sum()) == 1
    for seed in range(6):
        # Every blob of an 8192 x 6144 slide holds a 500-µm lesion (the layout used to cap it at 0.3 of its blob).
        spec = SyntheticSpec(width=8192, height=6144, mpp=MPP, seed=seed, tumour_radius_um=(500, 500))
        truth = MosaicRenderer(spec, bank).truth()
        radius = (truth.tumour_area_um2 / np.pi) ** 0.5
        assert abs(radius - 500) < CELL * MPP, (seed, radius)


def test_roles_build_the_joined_split_cohort_from_the_cli(tmp_path, capsys):
    """`synth --roles`: the three roles from their own splits, joined with the `split` column train reads."""
    out = tmp_path / "real"
    assert main(["synth", str(out), "--texture-from", str(PCAM), "--roles", "train=2,val=1,test=1", "--size", "1024",
                 "--seed", "1", "--no-progress"]) == 0
    cohort = pd.read_csv(out / "cohort.csv", keep_default_na=False)
    assert cohort["split"].tolist() == ["train", "train", "val", "test"]
    assert cohort["texture_split"].tolist() == ["train", "train", "valid", "test"]
    assert all(Path(u).is_absolute() and Path(u).exists() for u in cohort["uri"])
    capsys.readouterr()
    for extra, expect in ((["--split", "train"], "error: --split: not with --roles"),
                          (["--n", "3"], "error: --n: not with --roles"),
                          (["--roles", "train=x"], "error: --roles: 'train=x': give ROLE=N pairs")):
        argv = ["synth", str(tmp_path / "x"), "--texture-from", str(PCAM), "--roles", "train=2", *extra]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(expect), err
    assert main(["synth", str(tmp_path / "x"), "--roles", "train=2"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --roles: needs --texture-from")
    assert not (tmp_path / "x").exists()
