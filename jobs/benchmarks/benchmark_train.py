"""Benchmark: training throughput of the grid models (1 vs 2 Ray Train workers) and AUC by tumour size.

    python jobs/benchmarks/benchmark_train.py [--quick] [--skip-results] [--skip-throughput] [--skip-cadence]

(1) Throughput: grids/s (training steps over whole grids, or NIC crops) and peak memory per model, C = 512,
    for grids of 100x100 and 400x400 cells with 1 and 2 Ray Train workers (`fit` on grid files of random
    embeddings), and a single forward+backward of each model on a 1000x1000 grid in a subprocess with a time
    limit (CPU-only here: what does not finish is reported as such).
(2) Results: the attention classifier and the NIC CNN, each with its paper recipe, on mean-rgb grids of a
    synthetic archive (train / validation / test folds): test AUC and accuracy with 95% bootstrap CIs, test AUC
    of each lesion-size tercile against all test normals (NIC Fig. 6/8), next to the papers' Camelyon16 numbers.
(3) Report cadence: the demo's training shape (16 mean-rgb-sized grids of 19x19 cells, C = 3, attention, 1 worker)
    for 20 epochs: reporting to Ray Train (metrics + checkpoint) every epoch with Ray Train's default 2 s controller
    poll (the baseline: before `report_every` and runtime.LOCAL_RAY_ENV), every epoch with slidegrid's 0.5 s poll,
    and every 10th epoch (the demo's): wall seconds of `fit` against the workers' own compute seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time

import numpy as np
from _measure import run_measured

import _bootstrap  # noqa: F401

MODELS = {"attention": {"maps": 8}, "nic-cnn": {}, "ran-cnn": {}, "ran-lstm": {}}


def _write_random_grids(root: str, n: int, side: int, c: int) -> str:
    """n grid files of random fp16 embeddings (every cell kept) and a cohort with alternating labels."""
    from slidegrid.io.grids import grid_table, grid_uri, write_grid

    rows = []
    rr, cc = (a.ravel() for a in np.meshgrid(np.arange(side), np.arange(side), indexing="ij"))
    rng = np.random.default_rng(0)
    for i in range(n):
        sid = f"g{i}"
        emb = rng.normal(size=(side * side, c)).astype(np.float16)
        meta = {"slide_id": sid, "source_uri": "", "grid_shape": [side, side], "code_size": c, "n_tiles": side * side,
                "target_mpp": 0.5, "stride": 224, "slide_mpp": 0.5, "slide_dimensions": [side * 224] * 2}
        write_grid(grid_uri(os.path.join(root, "grids"), sid),
                   grid_table(rr, cc, cc * 224, rr * 224, np.ones(side * side, np.float32), emb, meta))
        rows.append({"slide_id": sid, "uri": f"{sid}.tiff", "label": i % 2, "fold": i % 4, "annotation": ""})
    with open(os.path.join(root, "cohort.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def throughput_row(root: str, model: str, workers: int) -> dict:
    """Train 2 epochs with Ray Train; grids/s from the workers' epoch timings."""
    from slidegrid.train.aggregator.config import build_train_config
    from slidegrid.train.aggregator.fit import run_train

    task = "segmentation" if model.startswith("ran-") else "classification"
    cfg = build_train_config({"grids": os.path.join(root, "grids"), "cohort": os.path.join(root, "cohort.csv"),
                              "out": tempfile.mkdtemp(), "model": model, "task": task, "recipe": "none", "epochs": 2,
                              "workers": workers,
                              "val_fold": 0, "patience": 0, "crop": 64, "test_crops": 1, "subgrid": 8,
                              "batch_size": 1, "model_kwargs": MODELS[model]})
    result = run_train(cfg, log_to_mlflow=False)
    last = result.history[-1]
    # Each of the W workers trains on its shard of the training grids in parallel during the epoch.
    return {"grids_per_s": last["train_grids"] / last["epoch_seconds"]}


def cadence_row(root: str, report_every: int, epochs: int, poll_s: str) -> dict:
    """Wall seconds of `fit` (Ray start to the selected checkpoint) and the workers' summed epoch seconds, with
    Ray Train's controller polling every `poll_s` seconds (set before this process starts Ray)."""
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = poll_s
    from slidegrid.train.aggregator.config import build_train_config
    from slidegrid.train.aggregator.fit import run_train

    cfg = build_train_config({"grids": os.path.join(root, "grids"), "cohort": os.path.join(root, "cohort.csv"),
                              "out": tempfile.mkdtemp(), "model": "attention", "recipe": "none", "epochs": epochs,
                              "workers": 1, "val_fold": 0, "patience": 0, "report_every": report_every,
                              "model_kwargs": MODELS["attention"]})
    t0 = time.perf_counter()
    result = run_train(cfg, log_to_mlflow=False)
    return {"wall_s": time.perf_counter() - t0, "compute_s": sum(h["epoch_seconds"] for h in result.history)}


def big_grid_row(model: str, side: int) -> dict:
    """One forward+backward of a model on a side x side x 512 grid (single process)."""
    import torch

    from slidegrid.models import build_model

    m = build_model(model, 512, 2, **MODELS[model])
    x = torch.randn(1, 512, side, side)
    t0 = time.perf_counter()
    m(x, torch.ones(1, side, side, dtype=torch.bool)).float().sum().backward()
    return {"seconds": time.perf_counter() - t0}


def _sub(args: list[str], timeout: float) -> dict | None:
    """One row in a fresh process; adds the peak memory it held (driver, Ray workers, object store; _measure.run_measured), MB."""
    m = run_measured([sys.executable, __file__, *args], timeout=timeout)
    if m.returncode is None:
        return None
    res = m.result or {"error": (m.output.strip().splitlines() or ["?"])[-1]}
    return {**res, "peak_mb": m.peak_bytes / 2**20}


# What each paper reports for the same model on Camelyon16 (other data: real slides, other encoders).
PAPER_RESULTS = {
    "attention": "AUC 0.711 ± 0.001 (FT-R34-AC), 0.590 (PT-R34-AC): attention-gigapixel-classifier Table I",
    "nic-cnn": "AUC 0.704 ± 0.030 (BiGAN), 0.578 (mean-RGB) on the test set: NIC Table 2",
}


def _synthetic_cohort(root: str, n: int) -> str:
    """n synthetic slides, half with one lesion of radius 15-300 µm (sub-tile to large, NIC Fig. 6), in 4 folds
    balanced by label; mean-rgb grids on 64-px tiles. Returns the cohort path; radii in `radius_um`."""
    from slidegrid.encode import EncodeConfig, run_encode
    from slidegrid.geometry.tiling import GridSpec
    from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide

    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        tumour = i % 2
        r = float(rng.uniform(15, 300))
        sid = f"s{i}"
        truth = write_synthetic_slide(os.path.join(root, f"{sid}.tiff"), SyntheticSpec(
            width=3072, height=2304, seed=500 + i, n_tumours=tumour, tumour_radius_um=(r, r), n_tissue_blobs=2))
        rows.append({"slide_id": sid, "uri": os.path.join(root, f"{sid}.tiff"), "label": tumour,
                     "fold": (i // 2) % 4, "annotation": "",
                     "radius_um": (truth.tumour_area_um2 / np.pi) ** 0.5 if tumour else 0.0})
    cohort = os.path.join(root, "cohort.csv")
    with open(cohort, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    run_encode(EncodeConfig(input=cohort, out=os.path.join(root, "grids"), dtype="float32", mlflow=False,
                            progress=False, grid=GridSpec(tile_size=64)))
    return cohort


def held_out_row(model_name: str, cfg, result, seconds: float, radius: dict[str, float]) -> dict:
    """The results-table row of one trained model (`fit`'s result for config `cfg`): recipe, slide counts, test
    AUC / accuracy with their 95% bootstrap CIs (fit's own test metrics), test AUC of each lesion-size tercile
    against all test normals (NIC Fig. 6/8: tumour slides binned by `radius[slide_id]`, µm), training seconds and
    the paper's Camelyon16 figure. The test slides are re-scored here with the selected model, as `fit` did."""
    import torch

    from slidegrid import metrics
    from slidegrid.train.aggregator.data import GridCache, load_examples
    from slidegrid.train.aggregator.inference import predict_grid
    from slidegrid.train.aggregator.registry import load_checkpoint_model

    split = load_examples(cfg.grids, cfg.cohort, cfg.task).split(cfg.val_fold, cfg.test_fold)
    test = split.test
    model, _, _ = load_checkpoint_model(result.checkpoint_dir, cfg)
    cache = GridCache()
    scores = {}
    for e in test:
        dense, mask, grid = cache.get(e.grid)
        out = predict_grid(model, model_name, dense, mask, "cpu", cfg.test_crops, grid=grid)
        scores[e.slide_id] = float(torch.softmax(out, 0)[1])
    labels = {e.slide_id: e.label for e in test}
    normals = [s for s in scores if labels[s] == 0]
    sizes = sorted(radius[s] for s in scores if labels[s] == 1)
    edges = [0.0, *np.quantile(sizes, [1 / 3, 2 / 3]), np.inf]
    by_size = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        pos = [s for s in scores if labels[s] == 1 and lo <= radius[s] < hi]
        ids = pos + normals
        name = f"{lo:.0f}-{hi:.0f} µm" if np.isfinite(hi) else f">= {lo:.0f} µm"
        by_size.append(f"{name}: {metrics.auc([labels[s] for s in ids], [scores[s] for s in ids]):.3f} "
                       f"(n={len(pos)})")
    t = result.test
    changed = ", ".join(f"{k} {getattr(cfg, k)}" for k in cfg.recipe_overrides)
    h = result.history
    best = h[-1].get("best_epoch", -1) if h else -1
    stopped = f", stopped early (patience {cfg.patience})" if len(h) < cfg.epochs else ""
    kept = f"; kept epoch {best + 1} of {len(h)}{stopped}" if best >= 0 else ""
    return {"model": model_name, "recipe": f"{cfg.recipe}{f' ({changed})' if changed else ''}{kept}",
            "train/val/test slides": f"{len(split.train)}/{len(split.val)}/{len(test)}",
            "test AUC (95% CI)": f"{t['test_auc']:.3f} ({t['test_auc_ci_low']:.3f}-{t['test_auc_ci_high']:.3f})",
            "test accuracy (95% CI)": f"{t['test_accuracy']:.3f} ({t['test_accuracy_ci_low']:.3f}-"
                                      f"{t['test_accuracy_ci_high']:.3f})",
            "test AUC by lesion radius": "; ".join(by_size), "train s": f"{seconds:.0f}",
            "paper (Camelyon16, other data)": PAPER_RESULTS.get(model_name, "")}


def results(n: int, models: list[str], epochs: int | None) -> list[dict]:
    """Each model trained with its paper recipe (`epochs` None: the recipe's) on folds 2-3 of a synthetic cohort,
    validated on fold 1 (model selection), scored once on the test fold 0: test AUC / accuracy with 95%
    bootstrap CIs, and test AUC of each lesion-size tercile against all test normals (NIC Fig. 6/8)."""
    import pandas as pd

    from slidegrid.train.aggregator.config import build_train_config
    from slidegrid.train.aggregator.fit import run_train

    root = tempfile.mkdtemp()
    cohort = _synthetic_cohort(root, n)
    radius = pd.read_csv(cohort).set_index("slide_id")["radius_um"].to_dict()
    rows = []
    for model_name in models:
        # NIC's R = 400 crops would be 400 x 400 zero-padded inputs for these ~48 x 36 grids: crop to the grid.
        extra = {"crop": 48, "test_crops": 2} if model_name == "nic-cnn" else {}
        cfg = build_train_config({"grids": os.path.join(root, "grids"), "cohort": cohort, "model": model_name,
                                  "out": os.path.join(root, model_name), "test_fold": 0, "workers": 2,
                                  "epochs": epochs, **extra})
        t0 = time.perf_counter()
        result = run_train(cfg, log_to_mlflow=False)
        rows.append(held_out_row(model_name, cfg, result, time.perf_counter() - t0, radius))
    return rows


def main() -> None:
    """Run the parts asked for and print their tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--skip-results", action="store_true")
    p.add_argument("--result-models", nargs="+", default=["attention", "nic-cnn"], choices=["attention", "nic-cnn"],
                   help="models of the results table (paper recipes, test-fold metrics)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-cadence", action="store_true")
    p.add_argument("--limit", type=float, default=120, help="seconds allowed per 1000x1000 row")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="models to measure")
    p.add_argument("--row-timeout", type=float, default=900, help="seconds allowed per Ray Train row")
    p.add_argument("--sides", type=int, nargs="+", default=[100, 400], help="grid sides of the throughput rows")
    p.add_argument("--slides", type=int, default=48, help="slides of the results part (4 folds: 2 train, 1 "
                   "validation, 1 test)")
    p.add_argument("--row", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.row:
        kind, model, *rest = a.row
        res = throughput_row(rest[0], model, int(rest[1])) if kind == "train" else \
            cadence_row(rest[0], int(model), int(rest[1]), rest[2]) if kind == "cadence" else big_grid_row(model, int(rest[0]))
        print("RESULT " + json.dumps(res))
        return
    if not a.skip_throughput:
        sides = [32] if a.quick else a.sides
        print("| model | grid | workers | grids/s | peak memory, driver + Ray workers (MB) |")
        print("|---|---|---|---|---|")
        for side in sides:
            root = _write_random_grids(tempfile.mkdtemp(), 8, side, 512)
            for model in a.models:
                for workers in (1, 2):
                    r = _sub(["--row", "train", model, root, str(workers)], timeout=a.row_timeout)
                    cell = f"> {a.row_timeout:.0f} s (not finished)" if r is None else r.get("error") or f"{r['grids_per_s']:.2f}"
                    mem = "" if not r or "peak_mb" not in r else f"{r['peak_mb']:.0f}"
                    print(f"| {model} | {side}x{side} | {workers} | {cell} | {mem} |", flush=True)
        for model in a.models:
            r = _sub(["--row", "big", model, "1000"], timeout=a.limit)
            cell = f"> {a.limit:.0f} s (not finished)" if r is None else r.get("error") or \
                f"{r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB"
            print(f"| {model} | 1000x1000 | 1 (fwd+bwd, no Ray) | {cell} | |", flush=True)
    if not a.skip_cadence:
        from slidegrid.runtime import LOCAL_RAY_ENV

        root, epochs, walls = _write_random_grids(tempfile.mkdtemp(), 16, 19, 3), 20, {}
        print("\n| report every | controller poll | epochs | reports | wall s of fit | worker compute s |\n"
              "|---|---|---|---|---|---|")
        for every, poll in ((1, "2.0"), (1, LOCAL_RAY_ENV["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]),
                            (10, LOCAL_RAY_ENV["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"])):
            r = _sub(["--row", "cadence", str(every), root, str(epochs), poll], timeout=a.row_timeout)
            reports = epochs // every
            if r and "wall_s" in r:
                walls[every, poll] = r["wall_s"]
            cell = "not finished" if r is None else r.get("error") or f"{r['wall_s']:.1f} | {r['compute_s']:.2f}"
            print(f"| {every} | {poll} s{' (baseline)' if poll == '2.0' else ''} | {epochs} | {reports} | {cell} |",
                  flush=True)
        if len(walls) == 3:
            (w_base, w_poll, w_every) = walls.values()
            extra = epochs - epochs // 10
            print(f"each extra report costs {(w_base - w_every) / extra:.2f} s with the default poll, "
                  f"{(w_poll - w_every) / extra:.2f} s with slidegrid's; {epochs} epochs: {w_base:.1f} s -> "
                  f"{w_every:.1f} s ({w_base / w_every:.1f}x faster)")
    if not a.skip_results:
        rows = results(16 if a.quick else a.slides, a.result_models, 2 if a.quick else None)
        print("\n| " + " | ".join(rows[0]) + " |")
        print("|" + "---|" * len(rows[0]))
        for r in rows:
            print("| " + " | ".join(str(v) for v in r.values()) + " |", flush=True)

if __name__ == "__main__":
    main()
