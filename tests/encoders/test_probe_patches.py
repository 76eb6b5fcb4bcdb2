"""Patch datasets as inputs and `slidegrid probe`: layouts, duplicates and refusals of the reader; the probe on
patches that differ in texture but not in mean colour; the command end to end; the real PCam folder (read only)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from slidegrid.cli import main
from slidegrid.encoders.patches import decode_patches, read_patch_set
from slidegrid.errors import ConfigError
from slidegrid.probe_patches import ProbeConfig, run_probe

PCAM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "realworld" / "patches" / "pcam"
SIDE = 32
AMPLITUDE = 40


def texture_pair(colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A flat patch of `colour` (class 0) and a 1-px checkerboard of colour ± AMPLITUDE (class 1): the same mean
    RGB exactly (half the pixels up, half down), only the texture differs."""
    flat = np.broadcast_to(colour, (SIDE, SIDE, 3)).astype(np.uint8)
    sign = np.where((np.add.outer(np.arange(SIDE), np.arange(SIDE)) % 2) == 0, 1, -1)[..., None]
    return flat, (colour + sign * AMPLITUDE).astype(np.uint8)


def write_texture_set(root: Path, per_class: int = 40, seed: int = 0) -> Path:
    """ROOT/{train,test}/{0,1}/*.png: each split `per_class` flat and as many checkered patches, in pairs of one
    colour each."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for i in range(per_class):
            colour = rng.integers(AMPLITUDE, 256 - AMPLITUDE, 3)
            for label, img in enumerate(texture_pair(colour)):
                d = root / split / str(label)
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(d / f"p{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def texture_set(tmp_path_factory) -> Path:
    return write_texture_set(tmp_path_factory.mktemp("texture"))


def test_texture_classes_have_the_same_mean_colour(texture_set):
    data = read_patch_set(str(texture_set), mpp=0.5)
    images = decode_patches(list(data.paths))
    means = images.reshape(len(images), -1, 3).mean(axis=1)
    flat, checker = means[data.labels == 0], means[data.labels == 1]
    np.testing.assert_array_equal(np.sort(flat, axis=0), np.sort(checker, axis=0))
    assert images.shape == (160, SIDE, SIDE, 3) and images.dtype == np.uint8
    assert images[data.labels == 0].std(axis=(1, 2)).max() == 0  # flat
    assert images[data.labels == 1].std(axis=(1, 2)).min() == AMPLITUDE  # textured


def test_probe_sees_texture_where_mean_rgb_cannot(texture_set, tmp_path, ray_local):
    common = {"patches": str(texture_set), "mpp": 0.5, "k": 5, "bootstrap_reps": 200, "mlflow": False,
              "progress": False}
    rgb = run_probe(ProbeConfig(encoder="mean-rgb", out=str(tmp_path / "rgb"), **common))
    conv = run_probe(ProbeConfig(encoder="timm:resnet18", weights="random", out=str(tmp_path / "conv"), **common))
    by = {(r["role"], r["probe"]): r for r in rgb.rows}
    # Each colour is in both classes: mean RGB gives the two patches of a pair the same score, AUC exactly 0.5.
    assert by["encoder", "linear"]["auc"] == pytest.approx(0.5) and by["encoder", "knn-5"]["auc"] == pytest.approx(0.5)
    assert by["encoder", "linear"]["accuracy"] == pytest.approx(0.5)
    assert [r["role"] for r in rgb.rows] == ["encoder", "encoder"]  # no twin for a weightless encoder
    assert rgb.notes[0] == "random twin: none, mean-rgb has no weights"
    # A random ResNet-18 already responds to 1-px texture.
    for r in conv.rows:
        assert r["auc"] > 0.9 and r["accuracy"] > 0.85 and r["dim"] == 512, r
        assert r["auc_low"] <= r["auc"] <= r["auc_high"] and r["n_train"] == 80 and r["n_test"] == 80
    assert conv.notes[0].startswith("random twin: none, timm:resnet18 has random weights already")


def test_random_twin_row_for_timm_weights(texture_set, tmp_path, ray_local):
    import timm
    import torch

    torch.manual_seed(1)  # another network than the twin's seed 0
    weights = tmp_path / "r18.pt"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), weights)
    report = run_probe(ProbeConfig(patches=str(texture_set), mpp=0.5, encoder="timm:resnet18", weights=str(weights),
                                   out=str(tmp_path / "o"), k=5, bootstrap_reps=200, mlflow=False, progress=False))
    roles = [(r["role"], r["probe"], r["weights"]) for r in report.rows]
    assert roles == [("encoder", "linear", str(weights)), ("encoder", "knn-5", str(weights)),
                     ("random twin", "linear", "random"), ("random twin", "knn-5", "random")]
    assert report.rows[0]["weights_digest"] != report.rows[2]["weights_digest"] == "random:seed0"


def _counts(data) -> dict:
    return {(s, int(y)): n for s, c in data.counts().items() for y, n in c.items()}


def test_layouts_read_the_same_labels(tmp_path):
    flat, checker = texture_pair(np.array([120, 80, 160]))
    for split, n in (("train", 3), ("test", 2)):
        for cls, img in (("normal", flat), ("tumour", checker)):
            for i in range(n):
                d = tmp_path / "split" / split / cls
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(d / f"{split}{i}.png")
    (tmp_path / "split" / ".DS_Store").write_text("ignored")
    split = read_patch_set(str(tmp_path / "split"), mpp=0.97)
    assert split.layout == "split-folders" and split.classes == {0: "normal", 1: "tumour"} and split.mpp == 0.97
    assert _counts(split) == {("test", 0): 2, ("test", 1): 2, ("train", 0): 3, ("train", 1): 3}
    # The train split alone as ROOT/<class>/: the same labels, no splits.
    classes = read_patch_set(str(tmp_path / "split" / "train"), mpp=0.97)
    assert classes.layout == "class-folders" and classes.split_names() == []
    assert classes.labels.tolist() == split.labels[split.splits == "train"].tolist()
    with pytest.raises(ConfigError, match="has no splits"):
        classes.split("train")
    # A table one folder up, paths relative to it.
    table = tmp_path / "patches.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for p, y, s in zip(split.paths, split.labels, split.splits):
            w.writerow([str(Path(p).relative_to(tmp_path)), split.classes[int(y)], s])
    tab = read_patch_set(str(table), mpp=0.97)
    assert tab.layout == "table" and tab.paths == split.paths and tab.labels.tolist() == split.labels.tolist()
    assert tab.splits.tolist() == split.splits.tolist()
    # Integer class names are the labels themselves.
    (tmp_path / "split" / "train" / "normal").rename(tmp_path / "split" / "train" / "3")
    (tmp_path / "split" / "train" / "tumour").rename(tmp_path / "split" / "train" / "7")
    ints = read_patch_set(str(tmp_path / "split" / "train"), mpp=0.97)
    assert sorted(set(ints.labels.tolist())) == [3, 7] and ints.classes == {3: "3", 7: "7"}


def test_duplicates_in_index_csv_are_dropped(tmp_path):
    write_texture_set(tmp_path, per_class=3)
    with open(tmp_path / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "split", "label", "duplicate_of"])
        w.writerow(["train/1/p000.png", "train", 1, ""])
        w.writerow(["test/1/p002.png", "test", 1, "train/1/p000.png"])
        w.writerow(["train/0/p001.png", "train", 0, "train/0/p000.png"])
    data = read_patch_set(str(tmp_path), mpp=0.5)
    assert data.duplicates_dropped == 2 and len(data.paths) == 10
    assert str(tmp_path / "test" / "1" / "p002.png") not in data.paths
    assert _counts(data) == {("test", 0): 3, ("test", 1): 2, ("train", 0): 2, ("train", 1): 3}


def _refused(tmp_path: Path, capsys, *argv: str) -> str:
    assert main(["probe", "--out", str(tmp_path / "out"), "--no-mlflow", "--no-progress", *argv]) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]  # after "Ray's logs: ..." when Ray started


def test_bad_patch_sets_are_refused_with_the_fix(tmp_path, capsys, ray_local):
    root = write_texture_set(tmp_path / "set", per_class=2)
    err = _refused(tmp_path, capsys, "--patches", str(root))
    assert err == "error: --mpp: patch sets carry no pixel size: pass --mpp, the µm/px of the patches " \
                  "(PatchCamelyon: 0.97)"
    err = _refused(tmp_path, capsys, "--patches", str(root), "--mpp", "0.5", "--test-split", "valid")
    assert err == "error: --test-split: no split 'valid' in " + str(root) + "; it has test, train"
    (root / "test" / "2").mkdir()
    err = _refused(tmp_path, capsys, "--patches", str(root), "--mpp", "0.5")
    assert err.startswith(f"error: {root / 'test' / '2'}: empty class folder")
    (root / "test" / "2").rmdir()
    (root / "train" / "0" / "notes.txt").write_text("not a patch")
    err = _refused(tmp_path, capsys, "--patches", str(root), "--mpp", "0.5")
    assert err.startswith(f"error: {root / 'train' / '0' / 'notes.txt'}: not an image (.png, .jpg, .jpeg, .tif")
    (root / "train" / "0" / "notes.txt").unlink()
    # A file that does not decode, found by a Ray Data decode task: its name and the fix, no traceback.
    broken = root / "test" / "1" / "p001.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    err = _refused(tmp_path, capsys, "--patches", str(root), "--mpp", "0.5", "--k", "2")
    assert err.startswith(f"error: {broken}: cannot decode the image (") and err.endswith("; replace or remove it")
    Image.fromarray(np.zeros((SIDE, SIDE + 1, 3), np.uint8)).save(broken)
    err = _refused(tmp_path, capsys, "--patches", str(root), "--mpp", "0.5", "--k", "2")
    assert err == f"error: {broken}: {SIDE + 1}×{SIDE} px; the other patches are {SIDE}×{SIDE}: resize the set to " \
                  "one patch size"
    err = _refused(tmp_path, capsys, "--patches", str(tmp_path / "nowhere"), "--mpp", "0.5")
    assert err.startswith(f"error: {tmp_path / 'nowhere'}: not found")


def test_probe_command_writes_table_csv_json_and_mlflow_run(texture_set, tmp_path, capsys, ray_local):
    out = tmp_path / "probe"
    assert main(["probe", "--encoder", "mean-rgb", "--patches", str(texture_set), "--mpp", "0.5", "--k", "5",
                 "--bootstrap-reps", "200", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    lines = {tuple(line.split()[:2]): line.split()[2:] for line in text.splitlines() if line.startswith("encoder ")}
    assert set(lines) == {("encoder", "linear"), ("encoder", "knn-5")}
    assert lines["encoder", "linear"][::3] == ["0.500", "0.500", "0.500"]  # accuracy, balanced accuracy, AUC
    assert "random twin: none, mean-rgb has no weights" in text
    rows = list(csv.DictReader((out / "probe-mean-rgb.csv").read_text().splitlines()))
    assert [(r["role"], r["probe"]) for r in rows] == [("encoder", "linear"), ("encoder", "knn-5")]
    assert float(rows[0]["auc"]) == pytest.approx(0.5) and rows[0]["n_test"] == "80"
    body = json.loads((out / "probe-mean-rgb.json").read_text())
    assert body["dataset"]["counts"] == {"test": {"0": 40, "1": 40}, "train": {"0": 40, "1": 40}}
    assert body["dataset"]["mpp"] == 0.5 and body["dataset"]["patch_px"] == SIDE
    mlflow.set_tracking_uri(f"sqlite:///{out}/mlflow/mlflow.db")
    run = mlflow.search_runs(experiment_names=["slidegrid-probe"], output_format="list")[0]
    assert run.data.metrics["encoder_linear_auc"] == pytest.approx(0.5)
    assert {"encoder_knn_accuracy_low", "encoder_knn_balanced_accuracy_high"} <= set(run.data.metrics)
    assert run.data.params["encoder"] == "mean-rgb" and run.data.params["dataset_n_train"] == "80"


@pytest.mark.skipif(not PCAM.is_dir(), reason=f"no PCam sample at {PCAM}")
def test_pcam_sample_reads_with_duplicates_left_out():
    data = read_patch_set(str(PCAM), mpp=0.97)
    assert data.layout == "split-folders" and data.mpp == 0.97 and data.duplicates_dropped == 155
    assert data.counts() == {"test": {0: 1500, 1: 1447}, "train": {0: 1000, 1: 991}, "valid": {0: 1500, 1: 1407}}
    assert len(set(data.paths)) == len(data.paths) == 7845
    patch = decode_patches([data.paths[0]])
    assert patch.shape == (1, 96, 96, 3) and patch.dtype == np.uint8


def test_learned_encoder_twin_has_its_geometry_and_other_geometries_are_refused(texture_set, tmp_path, capsys,
                                                                                 ray_local):
    from slidegrid.encoders.learned import build_method, load_encoder_file, save_encoder
    from slidegrid.encoders.nets import NetConfig

    weights = save_encoder(str(tmp_path / "vae.pt"), build_method("vae", NetConfig(SIDE, 8, 4, 2)), 0.5)
    report = run_probe(ProbeConfig(patches=str(texture_set), mpp=0.5, encoder="vae", weights=weights,
                                   out=str(tmp_path / "o"), k=5, bootstrap_reps=200, mlflow=False, progress=False))
    twin = tmp_path / "o" / "random-twin-vae.pt"
    assert [(r["role"], r["weights"]) for r in report.rows][::2] == [("encoder", weights), ("random twin", str(twin))]
    embedder, _ = load_encoder_file(str(twin), "vae")
    assert embedder.meta["tile_size"] == SIDE and embedder.meta["net"] == NetConfig(SIDE, 8, 4, 2).to_dict()
    assert all(r["dim"] == 8 for r in report.rows)
    # `--weights random` is NIC's 128-px network: it cannot run on 32-px patches, and says what to do.
    err = _refused(tmp_path, capsys, "--patches", str(texture_set), "--mpp", "0.5", "--encoder", "vae",
                   "--weights", "random", "--k", "5")
    assert err == ("error: random: vae was trained on 128-px tiles at 0.5 µm/px; the patches are 32 px at 0.5 µm/px: "
                   "probe it on patches of its geometry, or train one on these (train-encoder --tile-size 32 "
                   "--mpp 0.5)")
