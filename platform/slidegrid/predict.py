"""`slidegrid predict`: a trained aggregator on a folder of grids -> predictions.csv and heatmap overlays."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError
from .io.storage import filesystem, join
from .train.aggregator.inference import write_heatmaps


def load_model(model_uri: str):
    """An aggregator logged by `slidegrid train` (MLflow URI) with its name and class names."""
    import mlflow
    import mlflow.pytorch

    try:
        model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
        info = mlflow.models.get_model_info(model_uri)
        run = mlflow.get_run(info.run_id)
    except Exception as exc:
        raise ConfigError(model_uri, f"cannot load the model ({type(exc).__name__}: {str(exc)[:200]}); check "
                                     "the URI (models:/name/version or runs:/id/model) and --tracking-uri") from None
    tags = run.data.tags
    return model.eval(), tags.get("slidegrid.model", "attention"), json.loads(tags.get("slidegrid.classes", "[]"))


def score_predictions(rows: list[dict[str, Any]], cohort: str, classes: list[str],
                      storage_options: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Score predictions against a cohort's labels (`label` for classifiers: AUC of the second class when there
    are two, accuracy; `target` for regressors: Spearman), each with its 95% bootstrap interval over slides, on
    the predicted slides the cohort labels. Empty when it labels none of them."""
    from . import metrics
    from .io.archive import read_cohort

    truth = {r.slide_id: r for r in read_cohort(cohort, storage_options)}
    stats: dict[str, Any] = {}
    if classes:
        known = [r for r in rows if truth.get(r["slide_id"]) and str(truth[r["slide_id"]].label) in classes]
        y = np.array([classes.index(str(truth[r["slide_id"]].label)) for r in known])
        p = np.array([[r[f"p_{c}"] for c in classes] for r in known]).reshape(len(known), len(classes))
        stats["accuracy"] = lambda i: np.mean(p[i].argmax(1) == y[i])
        if len(classes) == 2:
            stats["auc"] = lambda i: metrics.auc(y[i], p[i, 1]) if len(set(y[i].tolist())) == 2 else np.nan
    else:
        known = [r for r in rows if truth.get(r["slide_id"]) and truth[r["slide_id"]].target is not None
                 and "prediction" in r]
        y = np.array([truth[r["slide_id"]].target for r in known])
        p = np.array([r["prediction"] for r in known])
        stats["spearman"] = lambda i: metrics.spearman(y[i], p[i])
    if not known:
        return {}
    out: dict[str, float] = {"slides": float(len(known))}
    for name, fn in stats.items():
        low, high = metrics.bootstrap_ci(fn, len(known))
        out.update({name: float(fn(np.arange(len(known)))), f"{name}_ci_low": low, f"{name}_ci_high": high})
    return out


@dataclass(frozen=True)
class PredictConfig:
    """Everything `slidegrid predict` takes."""

    grids: str  # grid store written by `slidegrid encode`
    model: str  # MLflow model URI (models:/name/version or runs:/id/model)
    out: str  # output folder: predictions.csv, heatmaps/, metrics.json
    tracking_uri: str | None = None  # where `model` is registered
    heatmaps: bool = True
    cohort: str | None = None  # labels (or targets) to score the predicted slides against
    storage_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictReport:
    """One row per grid (slide_id, prediction, class probabilities p_<class> / cells called positive), where they
    went, and the scores against the cohort's labels (empty without a cohort or when it labels none)."""

    rows: list[dict[str, Any]]
    predictions: str  # path of predictions.csv
    heatmaps: str | None  # folder of heatmap PNGs
    metrics: dict[str, float]


def run_predict(config: PredictConfig) -> PredictReport:
    """Predict every grid in `config.grids` with the aggregator at `config.model`: predictions.csv (+ heatmaps/)
    in `config.out`; with a labelled cohort also metrics.json, the predicted slides scored (`score_predictions`)."""
    import mlflow
    import torch

    from .io.grids import MANIFEST_NAME
    from .train.aggregator.data import GridCache
    from .train.aggregator.inference import predict_grid

    grids, out_dir, storage_options = config.grids, config.out, config.storage_options
    if config.tracking_uri:
        mlflow.set_tracking_uri(config.tracking_uri)
    model, name, classes = load_model(config.model)
    fs, path = filesystem(grids, storage_options)
    files = sorted(f for f in fs.ls(path, detail=False) if f.endswith(".parquet")
                   and not os.path.basename(f).startswith(("_", ".")) and not f.endswith(MANIFEST_NAME))
    if not files:
        raise ConfigError(grids, "no grid files (*.parquet) found; run `slidegrid encode` first")
    prefix = grids.split("://", 1)[0] + "://" if "://" in grids else ""
    uris = [prefix + f for f in files]
    os.makedirs(out_dir, exist_ok=True)
    cache = GridCache(storage_options, max_items=4)
    rows = []
    for uri in uris:
        dense, mask, grid = cache.get(uri)
        out = predict_grid(model, name, dense, mask, torch.device("cpu"), grid=grid)
        row: dict[str, Any] = {"slide_id": grid.meta["slide_id"]}
        if out.dim() == 1 and classes:
            probs = torch.softmax(out, 0).numpy()
            row.update({"prediction": classes[int(probs.argmax())],
                        **{f"p_{c}": round(float(p), 6) for c, p in zip(classes, probs)}})
        elif out.dim() == 1:
            row["prediction"] = float(out.squeeze())
        else:
            row["positive_cells"] = int((out.argmax(0).numpy() == 1)[mask].sum())
        rows.append(row)
    scored: dict[str, float] = {}
    if config.cohort:
        scored = score_predictions(rows, config.cohort, classes, storage_options)
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(scored, f, indent=1)
    csv_path = os.path.join(out_dir, "predictions.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    hdir = None
    if config.heatmaps:
        hdir = join(out_dir, "heatmaps")
        os.makedirs(hdir, exist_ok=True)
        write_heatmaps(model, name, uris, cache, hdir, storage_options)
    return PredictReport(rows, csv_path, hdir, scored)
