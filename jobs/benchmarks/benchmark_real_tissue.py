"""Benchmark: NIC Table 1 and the slide-level results on real tissue (issue 16, items 2 and 4).

    python jobs/benchmarks/benchmark_real_tissue.py [--patches ../shared/data/realworld/patches/pcam] [--out DIR] [--quick]

One run, two tables, with wall times:

(a) Patch probe, real PatchCamelyon patches (96 px at 0.97 µm/px): the VAE, contrastive, BiGAN and supervised
    encoders trained by `run_train_encoder` on `train/` (validation `valid/`, never `test/`), each probed on `test/`
    by `run_probe` (standardized logistic regression and k-NN, k = 20, fitted on `train/`; 95% bootstrap CIs)
    beside its random-weights twin; the floors: mean-RGB (`run_probe`), colour mean + std + 16-bin histograms
    per channel (computed here, the same probes) and a random ResNet-18 (`--resnet18`: 4 min on 2 cores;
    otherwise the README's measured row is quoted). Contrastive on patches: *same* = two random crops (64-96
    px) of one patch under independent §2.2 augmentations, *different* = another patch (no adjacent tiles).
(b) Slides, real-texture synthetic slides (`synthesize_archive(texture_from=..., split=...)`): train slides tiled
    from `train/` patches, validation slides from `valid/`, test slides from `test/`, one cohort with a `split`
    column; grids of 96-px tiles at 0.97 µm/px from mean-RGB and from the best learned encoder (chosen by its
    linear-probe AUC on `valid/`, never `test/`); the attention classifier and the NIC CNN with their paper
    recipes (`--attention-epochs N` shortens the attention one); 40 / 20 / 30 slides of 4096 x 3072 px, one
    lesion of 40-500 µm radius per tumour slide (`--quick`: 6 / 4 / 6, one attention epoch); test AUC / accuracy with 95%
    CIs and AUC by lesion-size tercile (NIC Fig. 6/8, `benchmark_train.held_out_row`). Also the tissue check: how
    many of the patch cells (and tumour cells) the tissue mask keeps as grid tiles, at several --min-tissue.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
import time

import numpy as np
from benchmark_train import held_out_row

import _bootstrap  # noqa: F401
from slidegrid.encoders.learned import METHODS

PCAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data", "realworld",
                    "patches", "pcam")
MPP = 0.97
# Epochs per method over the 1,984-patch training split (batch 64, 31 steps), sized for a 2-core CPU: BiGAN's
# step (D + G + E) costs ~7x the supervised one, the VAE's ~2.5x (measured on this machine).
SETTINGS = {
    False: {"epochs": {"vae": 8, "contrastive": 10, "bigan": 5, "supervised": 10}, "code_size": 32, "width": 16,
            "depth": 4, "tiles": 1984, "val_tiles": 1024, "slides": {"train": 40, "val": 20, "test": 30},
            "size": 4096, "attention_epochs": None, "radius_um": (40.0, 500.0)},
    True: {"epochs": {"vae": 2, "contrastive": 2, "bigan": 1, "supervised": 2}, "code_size": 32, "width": 8,
           "depth": 4, "tiles": 512, "val_tiles": 256, "slides": {"train": 6, "val": 4, "test": 6},
           "size": 4096, "attention_epochs": 1, "radius_um": (40.0, 500.0)},
}
# The README's `slidegrid probe --encoder timm:resnet18 --weights random` run (same data and probes), quoted
# when --resnet18 is not given.
RESNET18_README = {"linear": (0.728, 0.785), "knn-20": (0.757, 0.826)}


def _fmt(r: dict, k: str) -> str:
    return f"{r[k]:.3f} [{r[k + '_low']:.3f}, {r[k + '_high']:.3f}]"


# -- (a) patches -------------------------------------------------------------------------------------------

def train_encoders(root: str, out: str, s: dict, methods: list[str]) -> dict[str, dict]:
    """run_train_encoder per method on train/ (validation valid/); encoder file, epochs, best epoch, seconds."""
    from slidegrid.geometry.tiling import GridSpec
    from slidegrid.train.encoder.config import EncoderTrainConfig
    from slidegrid.train.encoder.fit import run_train_encoder

    trained = {}
    for m in methods:
        cfg = EncoderTrainConfig(input=root, out=os.path.join(out, f"encoder-{m}"), method=m, grid=GridSpec(mpp=MPP),
                                 train_split="train", val_split="valid", code_size=s["code_size"], width=s["width"],
                                 depth=s["depth"], epochs=s["epochs"][m], tiles=s["tiles"], batch_size=64,
                                 val_tiles=s["val_tiles"], mlflow=False)
        t0 = time.perf_counter()
        r = run_train_encoder(cfg)
        h = r.history
        trained[m] = {"file": r.encoder_file, "epochs": len(h), "best_epoch": r.best_epoch,
                      "seconds": time.perf_counter() - t0, "train_loss": (h[0]["train_loss"], h[-1]["train_loss"]),
                      "val_loss": (h[0].get("val_loss"), h[-1].get("val_loss")),
                      "epoch_s": float(np.median([e["epoch_seconds"] for e in h]))}
        print(f"trained {m}: {trained[m]}", flush=True)
    return trained


def probe(root: str, out: str, encoder: str, weights: str | None) -> tuple[list[dict], float]:
    """run_probe on train/ -> test/ (with the random twin where there is one); rows and seconds."""
    from slidegrid.probe_patches import ProbeConfig, run_probe

    t0 = time.perf_counter()
    rep = run_probe(ProbeConfig(patches=root, mpp=MPP, encoder=encoder, weights=weights,
                                out=os.path.join(out, "probe", encoder.replace(":", "-")), mlflow=False,
                                progress=False))
    return rep.rows, time.perf_counter() - t0


def decoded_splits(root: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> ((N, 96, 96, 3) uint8 patches, (N,) labels), duplicates left out (read_patch_set)."""
    from slidegrid.encoders.patches import decode_patches, read_patch_set

    data = read_patch_set(root, MPP)
    out = {}
    for split in data.split_names():
        idx = data.split(split)
        out[split] = (decode_patches([data.paths[i] for i in idx]), data.labels[idx])
    return out


def colour_features(images: np.ndarray) -> np.ndarray:
    """(N, 54): per RGB channel the mean, std and a 16-bin histogram (fractions of pixels) of each patch."""
    flat = images.reshape(len(images), -1, 3).astype(np.float32)
    hist = [np.stack([np.bincount(c // 16, minlength=16) for c in img.T.astype(np.int64)]).ravel() / flat.shape[1]
            for img in images.reshape(len(images), -1, 3)]
    return np.hstack([flat.mean(1), flat.std(1), np.asarray(hist, np.float32)])


def feature_rows(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray) -> list[dict]:
    """Linear and k-NN probe rows (the probe command's functions) of in-process features."""
    from slidegrid.encoders.probe import knn_probe_scores, linear_probe_scores, probe_metrics

    rows = []
    for pname, (pred, score) in (("linear", linear_probe_scores(x_train, y_train, x_test)),
                                 ("knn-20", knn_probe_scores(x_train, y_train, x_test, 20))):
        rows.append({"role": "encoder", "encoder": name, "probe": pname, "dim": x_train.shape[1],
                     **probe_metrics(y_test, pred, score)})
    return rows


def valid_auc(method: str, path: str, splits: dict) -> float:
    """Linear-probe AUC on valid/ (fitted on train/) of a trained encoder, in process: what picks the encoder
    for the slides, so test/ never steers a choice."""
    import torch

    from slidegrid import metrics
    from slidegrid.encoders.learned import load_encoder_file
    from slidegrid.encoders.nets import to_input
    from slidegrid.encoders.probe import linear_probe_scores

    embedder, _ = load_encoder_file(path, method)
    embedder.eval()

    def embed(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([embedder(to_input(torch.from_numpy(images[i:i + 256]))).numpy()
                                   for i in range(0, len(images), 256)])

    (xt, yt), (xv, yv) = splits["train"], splits["valid"]
    _, score = linear_probe_scores(embed(xt), yt, embed(xv))
    return float(metrics.auc(yv, score))


def patch_table(root: str, out: str, s: dict, methods: list[str], resnet18: bool) -> tuple[list[str], dict]:
    """Table (a) as markdown lines, and the trained encoders (with their valid/ AUC)."""
    splits = decoded_splits(root)
    lines = ["| encoder (real tissue: PCam, fit train/, score test/) | weights | C | probe | accuracy [95% CI] | "
             "balanced accuracy [95% CI] | AUC [95% CI] | training |", "|---|---|---|---|---|---|---|---|"]

    def add(rows: list[dict], name: str, weights: str, training: str) -> None:
        for r in rows:
            w = "random (seed 0, the twin)" if r["role"] != "encoder" else weights
            t = "" if r["role"] != "encoder" else training
            lines.append(f"| {name} | {w} | {r['dim']} | {r['probe']} | {_fmt(r, 'accuracy')} | "
                         f"{_fmt(r, 'balanced_accuracy')} | {_fmt(r, 'auc')} | {t} |")

    rows, sec = probe(root, out, "mean-rgb", None)
    add(rows, "mean-rgb", "none", f"none (probe {sec:.0f} s)")
    t0 = time.perf_counter()
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    add(feature_rows("colour", colour_features(xtr), ytr, colour_features(xte), yte), "colour mean + std + "
        "16-bin histograms", "none", f"none ({time.perf_counter() - t0:.0f} s; issue 16 measured 0.803 / 0.876)")
    if resnet18:
        rows, sec = probe(root, out, "timm:resnet18", "random")
        add(rows, "timm:resnet18", "random (seed 0)", f"none (probe {sec:.0f} s)")
    else:
        for p, (acc, auc) in RESNET18_README.items():
            lines.append(f"| timm:resnet18 | random (seed 0) | 512 | {p} | {acc:.3f} (README run) | | {auc:.3f} "
                         "(README run) | none (not re-run: --resnet18) |")
    trained = train_encoders(root, out, s, methods)
    for m, t in trained.items():
        t["valid_auc"] = valid_auc(m, t["file"], splits)
        rows, sec = probe(root, out, m, t["file"])
        kept = f"epoch {t['best_epoch'] + 1} of {t['epochs']}" if t["best_epoch"] is not None else \
            f"last of {t['epochs']}"
        add(rows, m, "trained on train/", f"{t['seconds']:.0f} s ({t['epochs']} epochs x {s['tiles']} patches, "
            f"{t['epoch_s']:.1f} s/epoch; kept {kept}; valid/ AUC {t['valid_auc']:.3f}; probe {sec:.0f} s)")
    return lines, trained


# -- (b) slides -----------------------------------------------------------------------------------------

def build_cohort(root: str, out: str, s: dict) -> tuple[str, dict[str, dict]]:
    """Three real-texture cohorts (train/ -> train, valid/ -> val, test/ -> test; synth.texture's
    synthesize_split_cohorts) with one tumour per tumour slide of the settings' radius range, and a copy of the joined
    cohort with `radius_um` (equivalent radius of the tumour cells) and `mask` (truth PNG); returns it and each
    role's texture.json."""
    import pandas as pd

    from slidegrid.synth.texture import synthesize_split_cohorts

    d = os.path.join(out, "slides")
    joined = synthesize_split_cohorts(d, root, s["slides"], size=s["size"], seed=1, tumours=(1, 1),
                                      tumour_radius_um=s["radius_um"], progress=False)
    texture = {}
    for role in s["slides"]:
        with open(os.path.join(d, role, "texture.json")) as f:
            texture[role] = json.load(f)
    cohort = pd.read_csv(joined, keep_default_na=False)
    cohort["radius_um"] = (cohort["tumour_area_um2"].astype(float) / np.pi) ** 0.5
    cohort["mask"] = [os.path.join(d, sid.split("-", 1)[0], "masks", f"{sid.split('-', 1)[1]}.png")
                      for sid in cohort["slide_id"]]
    path = os.path.join(d, "cohort-radius.csv")
    cohort.to_csv(path, index=False)
    return path, texture


def _tumour_hits(mask: np.ndarray, x: np.ndarray, y: np.ndarray) -> int:
    """How many 96-px tiles with level-0 corners (x, y) have their centre on the tumour of a MASK_MPP truth mask."""
    from slidegrid.synth.slides import MASK_MPP

    mx = np.clip(((x + 48) * MPP / MASK_MPP).astype(int), 0, mask.shape[1] - 1)
    my = np.clip(((y + 48) * MPP / MASK_MPP).astype(int), 0, mask.shape[0] - 1)
    return int(mask[my, mx].sum())


def tissue_check(cohort: str, texture: dict, grids: str) -> list[str]:
    """Patch cells vs grid tiles: what the tissue mask and --min-tissue keep of the mosaic (all tumour cells
    counted from the PNG truth masks), for the encoded grids and, planned only, at other --min-tissue."""
    import cv2

    from slidegrid.geometry.tiling import GridSpec, tile_grid
    from slidegrid.geometry.tissue import TissueConfig, tissue_mask
    from slidegrid.io.grids import grid_uri, read_grid
    from slidegrid.io.slides import open_slide

    with open(cohort, newline="") as f:
        slides = list(csv.DictReader(f))
    cells = sum(t["normal"]["cells"] + t["tumour"]["cells"] for t in texture.values())
    tumour_cells = sum(t["tumour"]["cells"] for t in texture.values())
    lines = ["| --min-tissue | grid tiles / patch cells | tumour cells kept | source |", "|---|---|---|---|"]
    kept = {0.25: [0, 0]}
    planned = {0.05: [0, 0], 0.5: [0, 0]}
    for r in slides:
        mask = cv2.imread(r["mask"], cv2.IMREAD_GRAYSCALE) > 0
        g = read_grid(grid_uri(grids, r["slide_id"]))
        kept[0.25][0] += len(g.x)
        kept[0.25][1] += _tumour_hits(mask, g.x, g.y)
        with open_slide(r["uri"]) as slide:
            tissue = tissue_mask(slide, TissueConfig())
            for mt, acc in planned.items():
                grid = tile_grid(slide.info.dimensions, slide.mpp_xy, GridSpec(MPP, 96, None, mt), tissue)
                acc[0] += len(grid.x)
                acc[1] += _tumour_hits(mask, np.asarray(grid.x), np.asarray(grid.y))
    for mt, (n, t) in sorted({**kept, **planned}.items()):
        lines.append(f"| {mt} | {n / cells:.3f} ({n} / {cells}) | {t / max(tumour_cells, 1):.3f} ({t} / "
                     f"{tumour_cells}) | {'encoded grids' if mt in kept else 'planned only'} |")
    return lines


def slide_table(root: str, out: str, s: dict, encoder: str, weights: str, attention_epochs: int | None
                ) -> tuple[list[str], list[str]]:
    """Table (b) as markdown lines, and the tissue check's lines."""
    from slidegrid.encode import EncodeConfig, run_encode
    from slidegrid.geometry.tiling import GridSpec
    from slidegrid.train.aggregator.config import build_train_config
    from slidegrid.train.aggregator.fit import run_train

    t0 = time.perf_counter()
    cohort, texture = build_cohort(root, out, s)
    print(f"cohorts synthesized in {time.perf_counter() - t0:.0f} s", flush=True)
    with open(cohort, newline="") as f:
        radius = {r["slide_id"]: float(r["radius_um"]) for r in csv.DictReader(f)}
    lines = ["| encoder | model | recipe | train/val/test slides | test AUC (95% CI) | test accuracy (95% CI) | "
             "test AUC by lesion radius | encode s | train s |", "|---|---|---|---|---|---|---|---|---|"]
    check: list[str] = []
    # NIC's R x R crops (§3.2) of grids smaller than the paper's R = 400: one crop holds the whole grid (its side
    # in cells rounded up to a multiple of 16), so no tumour is cropped away and no compute goes to padding.
    crop = -(-math.ceil(s["size"] / 96) // 16) * 16
    for name, weights_ in (("mean-rgb", None), (encoder, weights)):
        grids = os.path.join(out, "grids", name)
        t0 = time.perf_counter()
        run_encode(EncodeConfig(input=cohort, out=grids, encoder=name, weights=weights_, dtype="float32",
                                mlflow=False, progress=False, grid=GridSpec(tile_size=96, mpp=MPP)))
        enc_s = time.perf_counter() - t0
        print(f"encoded {name} in {enc_s:.0f} s", flush=True)
        if not check:
            check = tissue_check(cohort, texture, grids)
            print("\n".join(check), flush=True)
        for model in ("attention", "nic-cnn"):
            extra = {"crop": crop, "test_crops": 2} if model == "nic-cnn" else (
                {"epochs": attention_epochs} if attention_epochs else {})
            cfg = build_train_config({"grids": grids, "cohort": cohort, "model": model, "workers": 2,
                                      "out": os.path.join(out, "train", f"{name}-{model}"), **extra})
            t0 = time.perf_counter()
            result = run_train(cfg, log_to_mlflow=False)
            r = held_out_row(model, cfg, result, time.perf_counter() - t0, radius)
            lines.append(f"| {name} | {model} | {r['recipe']} | {r['train/val/test slides']} | "
                         f"{r['test AUC (95% CI)']} | {r['test accuracy (95% CI)']} | "
                         f"{r['test AUC by lesion radius']} | {enc_s:.0f} | {r['train s']} |")
            print(lines[-1], flush=True)
    return lines, check


def main() -> None:
    """Run both parts once and print their tables and wall times."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patches", default=os.path.normpath(PCAM), help="the PatchCamelyon folder (train/ valid/ test/)")
    p.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    p.add_argument("--quick", action="store_true", help="tiny training and cohort (a smoke run, minutes)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--resnet18", action="store_true", help="also probe a random ResNet-18 (~4 min on 2 cores)")
    p.add_argument("--attention-epochs", type=int, default=None, help="attention recipe epochs (default: "
                   "the paper's 35; --quick: 1)")
    p.add_argument("--skip-slides", action="store_true")
    a = p.parse_args()
    s = SETTINGS[a.quick]
    out = a.out or tempfile.mkdtemp(prefix="bench-real-")
    from slidegrid.runtime import ray_logs_to

    with ray_logs_to(os.path.join(out, "ray.log")):  # says where, once Ray starts
        run(a, s, out)


def run(a: argparse.Namespace, s: dict, out: str) -> None:
    """Both parts, their tables and wall times (main's work, inside the Ray log redirection)."""
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    lines, trained = patch_table(a.patches, out, s, a.methods.split(","), a.resnet18)
    patch_s = time.perf_counter() - t0
    print(f"\n(a) NIC Table 1 on real tissue — PatchCamelyon patches, {patch_s / 60:.1f} min\n")
    print("\n".join(lines), flush=True)
    if a.skip_slides:
        return
    best = max(trained, key=lambda m: trained[m]["valid_auc"])
    print(f"\nbest learned encoder by valid/ linear-probe AUC: {best} "
          f"({', '.join(m + ' ' + format(t['valid_auc'], '.3f') for m, t in trained.items())})", flush=True)
    t0 = time.perf_counter()
    slide_lines, check = slide_table(a.patches, out, s, best, trained[best]["file"],
                                     a.attention_epochs or s["attention_epochs"])
    slide_s = time.perf_counter() - t0
    print(f"\n(a) NIC Table 1 on real tissue — PatchCamelyon patches, {patch_s / 60:.1f} min\n")
    print("\n".join(lines))
    print(f"\n(b) slide level on real-texture synthetic slides ({s['size']} x {s['size'] * 3 // 4} px at {MPP} "
          f"µm/px, slides {s['slides']}), {slide_s / 60:.1f} min\n")
    print("\n".join(slide_lines))
    print("\ntissue check (all three cohorts):\n")
    print("\n".join(check))
    print(f"\nwall time: {(time.perf_counter() - t_all) / 60:.1f} min, working folder {out}")


if __name__ == "__main__":
    main()
