"""MLflow for trained models: params, per-epoch metrics, plots, the model with its signature, registration."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...tracking import log_history, log_registered_model, safe_params, tracked_run
from ..checkpoints import read_state
from .config import TrainConfig
from .data import Split


def load_checkpoint_model(ckpt_dir: str, cfg: TrainConfig):
    """Rebuild the model of a Ray Train checkpoint (weights only: torch.load(weights_only=True))."""

    from ...models import GridStandardizer, build_model

    state = read_state(ckpt_dir)
    n_out = {"classification": len(state["classes"]), "regression": 1, "segmentation": 2}[cfg.task]
    c = int(state["code_size"])
    model = GridStandardizer(build_model(cfg.model, c, n_out, **cfg.model_kwargs), [0.0] * c, [1.0] * c)
    # The selected model: the epoch with the lowest validation loss (the last epoch's weights resume training).
    model.load_state_dict(state.get("best_model") or state["model"])
    model.eval()
    return model, list(state["classes"]), int(state["code_size"])


def _plots(cfg: TrainConfig, model, classes: Sequence[str], out_dir: str, examples: Sequence[Any],
           part: str) -> None:
    """ROC curve and confusion matrix of the selected model on `examples` (the `part`: test, else validation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ... import metrics
    from .data import GridCache
    from .inference import predict_grid

    if cfg.task != "classification" or not examples:
        return
    cache = GridCache(cfg.storage_options)
    probs, truth = [], []
    for e in examples:
        dense, mask, grid = cache.get(e.grid)
        out = predict_grid(model, cfg.model, dense, mask, torch.device("cpu"), cfg.test_crops, cfg.crop, grid)
        probs.append(torch.softmax(out, 0).numpy())
        truth.append(e.label)
    p, y = np.stack(probs), np.array(truth)
    cm = metrics.confusion_matrix(y, p.argmax(1), labels=list(range(len(classes))))
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{part} slides ({len(examples)})")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "confusion_matrix.png"))
    plt.close(fig)
    if p.shape[1] == 2 and len(set(y.tolist())) == 2:
        fpr, tpr = metrics.roc_curve(y, p[:, 1])
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(fpr, tpr, label=f"{part} AUC {metrics.auc(y, p[:, 1]):.3f}")
        ax.plot([0, 1], [0, 1], "k--", lw=0.5)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "roc.png"))
        plt.close(fig)


def score_test_set(cfg: TrainConfig, model, test: Sequence[Any]) -> dict[str, float]:
    """The selected model scored once on the `test` examples (`test_*` metrics with 95% bootstrap intervals over
    slides); empty when the run has no test set (no --test-fold, no `split` column)."""
    import torch

    from .data import GridCache
    from .inference import evaluate

    if not test:
        return {}
    return evaluate(model, cfg, test, GridCache(cfg.storage_options), torch.device("cpu"), prefix="test", ci=True)


def log_training_run(cfg: TrainConfig, history: list[dict[str, Any]], ckpt_dir: str, test: dict[str, float],
                     split: Split, parent_run_id: str | None = None) -> tuple[str, str]:
    """One MLflow run: params, per-epoch metrics, the test metrics, plots and heatmaps of the test slides (else
    the validation slides), the selected model (registered); returns ids."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from .data import GridCache

    model, classes, code_size = load_checkpoint_model(ckpt_dir, cfg)
    name = cfg.register_as or f"slidegrid-{cfg.model}-{cfg.task}"
    params = ({k: v for k, v in cfg.to_dict().items() if k != "model_kwargs"}
              | {f"model_kwargs.{k}": v for k, v in cfg.model_kwargs.items()})
    tags = {"slidegrid.classes": json.dumps(classes), "slidegrid.model": cfg.model, "slidegrid.task": cfg.task}
    with tracked_run("slidegrid-train", f"{cfg.model}-{cfg.task}", cfg.out, cfg.tracking_uri, params, tags,
                     parent_run_id) as run:
        log_history(history)
        mlflow.log_metrics(test)
        with tempfile.TemporaryDirectory() as d:
            from .inference import write_heatmaps

            shown, part = (split.test, "test") if split.test else (split.val, "validation")
            mlflow.set_tag("slidegrid.split", split.how)
            _plots(cfg, model, classes, d, shown, part)
            write_heatmaps(model, cfg.model, [e.grid for e in shown[:4]], GridCache(cfg.storage_options), d,
                           cfg.storage_options)
            mlflow.log_artifacts(d, artifact_path="evaluation")
        example = torch.zeros((1, code_size, 8, 8))
        with torch.no_grad():
            out = model(example, torch.ones((1, 8, 8), dtype=torch.bool))
        signature = infer_signature(example.numpy(), out.numpy())
        uri = log_registered_model(model, name, signature)
    print(f"mlflow: run {run.info.run_id}, model {uri} ({mlflow.get_tracking_uri()})")
    return run.info.run_id, uri


def log_sweep(base: TrainConfig, space, grid) -> str:
    """A parent MLflow run for the sweep with one nested run per trial (params + per-epoch metrics)."""
    import mlflow

    params = {"space": json.dumps(space.params), "metric": space.metric, "mode": space.mode, "trials": len(grid),
              "model": base.model, "task": base.task}
    with tracked_run("slidegrid-tune", f"sweep-{base.model}-{base.task}", base.out, base.tracking_uri,
                     params) as parent:
        best = grid.get_best_result(metric=space.metric, mode=space.mode, scope="all")
        mlflow.log_metric(f"best_{space.metric}", float(best.metrics[space.metric]))
        for i, result in enumerate(grid):
            params = dict(result.config)
            with mlflow.start_run(run_name=f"trial-{i}", nested=True):
                mlflow.log_params(safe_params(params))
                df = result.metrics_dataframe
                for row in ([] if df is None else df.to_dict("records")):
                    mlflow.log_metrics({k: float(v) for k, v in row.items() if isinstance(v, (int, float))
                                        and not isinstance(v, bool) and np.isfinite(v) and k != "epoch"
                                        and not k.startswith(("time", "timestamp", "training_iteration"))},
                                       step=int(row.get("epoch", 0)))
                if result.error:
                    mlflow.set_tag("error", str(result.error)[:500])
    return parent.info.run_id
