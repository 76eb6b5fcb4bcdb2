"""`slidegrid predict`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import json
import os

from ..io.storage import parse_storage_options
from .options import (
    add_storage,
    metrics_text,
)


def _predict(args: argparse.Namespace) -> int:
    from ..predict import predict

    path = predict(args.grids, args.model, args.out, args.tracking_uri, not args.no_heatmaps,
                   parse_storage_options(args.storage_options), args.cohort)
    print(f"predictions: {path}")
    if args.cohort:
        with open(os.path.join(args.out, "metrics.json")) as f:
            scored = json.load(f)
        print(f"scored against {args.cohort}: " + (f"{metrics_text(scored)} on {int(scored['slides'])} slides"
                                                   if scored else "the cohort labels none of the predicted slides"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="apply a trained aggregator to grids: predictions.csv + heatmaps")
    p.add_argument("--grids", required=True, help="grid store")
    p.add_argument("--model", required=True, help="MLflow model URI (models:/name/version or runs:/id/model)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI the model is registered in")
    p.add_argument("--no-heatmaps", action="store_true", help="skip heatmap PNGs")
    p.add_argument("--cohort", default=None, help="cohort table with labels (or targets): score the predicted "
                   "slides it labels (AUC, accuracy / Spearman with 95%% CIs) into OUT/metrics.json")
    add_storage(p)
    p.set_defaults(func=_predict)
