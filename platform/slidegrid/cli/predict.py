"""`slidegrid predict`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import (
    ConfigOptions,
    add_storage,
    metrics_text,
)


def _predict(args: argparse.Namespace) -> int:
    from ..predict import run_predict

    report = run_predict(args.options.build(args))
    print(f"predictions: {report.predictions}")
    if args.options.value(args, "cohort"):
        print(f"scored against {args.cohort}: " + (f"{metrics_text(report.metrics)} on "
                                                   f"{int(report.metrics['slides'])} slides" if report.metrics
                                                   else "the cohort labels none of the predicted slides"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="apply a trained aggregator to grids: predictions.csv + heatmaps",
                       description="Apply an aggregator trained by `slidegrid train` (an MLflow model URI) to every "
                                   "grid of a store: OUT/predictions.csv (one row per slide), a heatmap PNG per slide under "
                                   "OUT/heatmaps/ (attention maps or Grad-CAM, as the model's card says) and, with "
                                   "--cohort, OUT/metrics.json against its labels.")
    o = ConfigOptions(p, "slidegrid.predict:PredictConfig")
    o.add("--grids", required=True, help="grid store")
    o.add("--model", required=True, help="MLflow model URI (models:/name/version or "
          "runs:/id/model)")
    o.add("--out", required=True, help="output folder")
    o.add("--tracking-uri", help="MLflow tracking URI the model is registered in")
    o.add("--no-heatmaps", field="heatmaps", action="store_false", help="skip heatmap PNGs")
    o.add("--cohort", help="cohort table with labels (or targets): score the predicted slides it labels (AUC, "
          "accuracy / Spearman with 95%% CIs) into OUT/metrics.json")
    add_storage(o)
    p.set_defaults(func=_predict)
