"""`slidegrid predict`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import json
import os

from .options import (
    ConfigOptions,
    add_storage,
    metrics_text,
)


def _predict(args: argparse.Namespace) -> int:
    path = args.options.build(args)
    print(f"predictions: {path}")
    if args.cohort:
        with open(os.path.join(args.out_dir, "metrics.json")) as f:
            scored = json.load(f)
        print(f"scored against {args.cohort}: " + (f"{metrics_text(scored)} on {int(scored['slides'])} slides"
                                                   if scored else "the cohort labels none of the predicted slides"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="apply a trained aggregator to grids: predictions.csv + heatmaps")
    o = ConfigOptions(p, "slidegrid.predict:predict")
    o.add("--grids", required=True, help="grid store")
    o.add("--model", field="model_uri", required=True, help="MLflow model URI (models:/name/version or "
          "runs:/id/model)")
    o.add("--out", field="out_dir", required=True, help="output folder")
    o.add("--tracking-uri", help="MLflow tracking URI the model is registered in")
    o.add("--no-heatmaps", field="heatmaps", action="store_false", help="skip heatmap PNGs")
    o.add("--cohort", help="cohort table with labels (or targets): score the predicted slides it labels (AUC, "
          "accuracy / Spearman with 95%% CIs) into OUT/metrics.json")
    add_storage(o)
    p.set_defaults(func=_predict)
