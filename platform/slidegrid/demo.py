"""`slidegrid demo`: the whole embedded flow on generated slides, on one machine with no setup.

synthesize a labelled archive -> tissue masks + overlays -> encode (Ray Data) -> train the attention
classifier (Ray Train, 2 workers) -> evaluate held-out slides -> MLflow run with heatmaps -> short report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class DemoConfig:
    """Size of the demo run."""

    out: str = "slidegrid-demo"
    slides: int = 24
    size: int = 4096
    seed: int = 0
    encoder: str = "mean-rgb"
    workers: int = 2
    epochs: int | None = None  # None: the attention paper's recipe (35 epochs of 38 optimizer steps)
    # Ray Train reports (and checkpoints) every 10th epoch and at the last: each report waits up to 2 s for Ray
    # Train's controller (train/checkpoints.py report_epoch), longer than a demo epoch.
    report_every: int = 10
    # A patch folder (PatchCamelyon layout): slides tiled from its real patches, one split per role (train/ ->
    # train, valid/ -> validation, test/ -> test: synth.texture.synthesize_split_cohorts), read at the
    # patches' own 0.97 µm/px. None: the fast procedural slides.
    texture_from: str | None = None

    def __post_init__(self) -> None:
        from .errors import ConfigError

        if self.slides < 5:
            raise ConfigError("--slides", f"{self.slides}: the demo needs at least 5 slides (5 folds: one to test, "
                              "one to validate, the rest to train)")
        if self.workers < 1:
            raise ConfigError("--workers", "must be at least 1")


def _tissue_overlays(cohort: str, out: str) -> pd.DataFrame:
    """Tissue mask + overlay PNG per slide and a summary table (fraction, tiles at 0.5 mpp)."""
    from .geometry.tiling import GridSpec, tile_grid
    from .geometry.tissue import tissue_mask
    from .io.archive import read_cohort
    from .io.slides import open_slide
    from .viz import overlay, save_png

    rows = []
    os.makedirs(out, exist_ok=True)
    for rec in read_cohort(cohort):
        with open_slide(rec.uri) as s:
            mask = tissue_mask(s)
            grid = tile_grid(s.info.dimensions, s.mpp_xy, GridSpec(), mask)
            thumb = s.thumbnail(mask.mpp)
        save_png(overlay(thumb, mask.mask), os.path.join(out, f"{rec.slide_id}_tissue.png"))
        rows.append({"slide_id": rec.slide_id, "label": rec.label, "tissue_fraction": round(mask.fraction, 3),
                     "tiles_224_at_0.5mpp": len(grid)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class DemoReport:
    """The final report of a demo run: what it made, the held-out test metrics and where everything went."""

    slides: int
    tiles: int
    test: dict[str, float]  # test_auc, test_accuracy (+ _ci_low/_ci_high) of the selected model
    model: str | None  # MLflow model URI
    mlflow: str  # the command that shows the runs
    tissue_overlays: str
    grids: str


def run_demo(cfg: DemoConfig) -> DemoReport:
    """Run every stage, print their progress and the final report, and return it."""
    from .encode import EncodeConfig, run_encode
    from .geometry.tiling import GridSpec
    from .io.manifest import summarize
    from .synth.slides import synthesize_archive
    from .train.aggregator.config import build_train_config
    from .train.aggregator.fit import run_train

    out = os.path.abspath(cfg.out)
    print(f"[1/5] synthesizing {cfg.slides} slides of {cfg.size}x{cfg.size * 3 // 4} px in {out}/archive"
          + (f", tissue tiled from the real patches of {cfg.texture_from}" if cfg.texture_from else ""))
    mpp, split = 0.5, {"test_fold": 0}
    if cfg.texture_from:
        from .synth.texture import PCAM_MPP, synthesize_split_cohorts

        n_val = n_test = max(2, cfg.slides // 4)
        cohort = synthesize_split_cohorts(os.path.join(out, "archive"), cfg.texture_from,
                                          {"train": max(2, cfg.slides - n_val - n_test), "val": n_val,
                                           "test": n_test}, size=cfg.size, seed=cfg.seed)
        mpp, split = PCAM_MPP, {}  # the cohort's split column decides train / val / test
    else:
        cohort = synthesize_archive(os.path.join(out, "archive"), n=cfg.slides, size=cfg.size, seed=cfg.seed)
    print("[2/5] tissue masks and tile grids")
    table = _tissue_overlays(cohort, os.path.join(out, "tissue"))
    print(table.to_string(index=False, max_rows=12))
    print(f"[3/5] encoding with {cfg.encoder} on Ray Data")
    results = run_encode(EncodeConfig(input=cohort, out=os.path.join(out, "grids"), encoder=cfg.encoder,
                                      dtype="float32", tracking_uri=f"sqlite:///{out}/mlflow.db",
                                      grid=GridSpec(tile_size=224, mpp=mpp))).results
    counts = summarize(results)
    print(f"      {counts['ok']} slides ok, {counts['failed']} failed, {counts['tiles']} tiles")
    print(f"[4/5] training the attention classifier with Ray Train ({cfg.workers} workers)")
    train_cfg = build_train_config({"grids": os.path.join(out, "grids"), "cohort": cohort,
                                    "out": os.path.join(out, "train"), "model": "attention",
                                    "task": "classification", "epochs": cfg.epochs, "workers": cfg.workers,
                                    **split,
                                    "report_every": cfg.report_every,
                                    "tracking_uri": f"sqlite:///{out}/mlflow.db"})
    result = run_train(train_cfg)
    print("[5/5] report")
    # Fold 0 (texture: the test/-patch slides) is the test set: never trained on, never used to pick the model
    # (fold 1, texture: the valid/-patch slides, validates).
    report = DemoReport(slides=cfg.slides, tiles=counts["tiles"], test=dict(result.test), model=result.model_uri,
                        mlflow=f"mlflow ui --backend-store-uri sqlite:///{out}/mlflow.db",
                        tissue_overlays=os.path.join(out, "tissue"), grids=os.path.join(out, "grids"))
    shown = {"slides": report.slides, "tiles": report.tiles, "test_auc": _with_ci(report.test, "test_auc"),
             "test_accuracy": _with_ci(report.test, "test_accuracy"), "model": report.model,
             "mlflow": report.mlflow, "tissue_overlays": report.tissue_overlays, "grids": report.grids}
    for k, v in shown.items():
        print(f"  {k:18s} {v}")
    return report


def _with_ci(test: dict[str, float], key: str) -> str:
    """'0.917 (95% CI 0.800-1.000)' for a test metric."""
    if key not in test:
        return "n/a"
    return f"{test[key]:.3f} (95% CI {test[key + '_ci_low']:.3f}-{test[key + '_ci_high']:.3f})"
