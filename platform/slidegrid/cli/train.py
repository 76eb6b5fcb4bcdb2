"""`slidegrid train`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from ..io.storage import parse_storage_options
from .options import (
    add_placement,
    add_storage,
    metrics_text,
)


def add_train_arguments(p: argparse.ArgumentParser, concurrent: bool = False) -> None:
    """Arguments of `slidegrid train` and (`concurrent` runs) `slidegrid tune`."""
    p.add_argument("--grids", required=True, help="grid store written by `slidegrid encode`")
    p.add_argument("--cohort", required=True, help="cohort table (slide_id, uri, label/target/annotation, fold)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, MLflow store, plots)")
    p.add_argument("--model", default=None, help="attention | nic-cnn | ran-cnn | ran-lstm (default attention)")
    p.add_argument("--task", default=None, help="classification | regression | segmentation")
    p.add_argument("--recipe", default=None, choices=("paper", "none"),
                   help="paper (default): the model's paper settings (optimizer, schedule in optimizer steps sized "
                        "on the paper's cohort, augmentation; README 'Training recipes'); none: slidegrid's "
                        "generic defaults. Explicit options still win and are recorded as recipe_overrides")
    p.add_argument("--config", default=None, help="YAML file of training options (epochs, lr, optimizer, ...)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--val-fold", type=int, default=None, help="cohort fold for validation: early stopping and "
                   "the model kept (default with --test-fold: the next fold)")
    p.add_argument("--test-fold", type=int, default=None, help="cohort fold held out as the test set, scored once "
                   "at the end with the selected model (test_* metrics with 95%% CIs); a `split` column "
                   "(train|val|test) in the cohort does the same without fold flags")
    p.add_argument("--storage", default=None, help="checkpoint storage (local path or s3://; default OUT/checkpoints)")
    p.add_argument("--name", default=None, help="run name; the same name and storage resume a run")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite under --out)")
    p.add_argument("--register-as", default=None, help="MLflow registered model name")
    add_storage(p)
    add_placement(p, reads=False, train=True, concurrent=concurrent)


def train_config(args: argparse.Namespace):
    from ..train.aggregator.config import build_train_config

    overrides = {k: getattr(args, k) for k in ("grids", "cohort", "out", "model", "task", "recipe", "epochs",
                                               "lr", "batch_size", "val_fold", "test_fold", "workers", "gpus_per_worker",
                                               "storage", "name", "tracking_uri", "register_as", "cpus_per_worker",
                                               "start_timeout_s")}
    overrides["storage_options"] = parse_storage_options(args.storage_options) or None
    return build_train_config(overrides, args.config)


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from ..train.aggregator.fit import cross_validate, fit

    cfg = train_config(args)
    if args.cv:
        per_fold = cross_validate(cfg)
        for fold, result in per_fold.items():
            print(f"test fold {fold}: {metrics_text(result.test)}  model: {result.model_uri}")
        keys = [k for k in next(iter(per_fold.values())).test if "_ci_" not in k]
        values = {k: np.array([r.test[k] for r in per_fold.values()]) for k in keys}
        print(f"{len(per_fold)}-fold cross-validation, each fold the test set once (validation: the next fold): "
              + ", ".join(f"{k} {v.mean():.4f} ± {v.std(ddof=1):.4f}" for k, v in values.items()))
        return 0
    result = fit(cfg)
    shown = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith(("val_", "train_loss"))}
    print(f"trained {cfg.model} ({cfg.task}) for {len(result.history)} epochs: {shown}")
    best = result.history[-1].get("best_epoch") if result.history else None
    print(f"selected model: epoch {best} (lowest validation loss)")
    if result.test:
        print(f"test set, scored once: {metrics_text(result.test)}")
    else:
        print("no test set (pass --test-fold or a `split` column): the validation figures above chose the model "
              "and are not a held-out estimate")
    print(f"checkpoint: {result.checkpoint_dir}")
    print(f"model: {result.model_uri}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a whole-slide aggregator on grids (Ray Train, MLflow)",
                       description="Train attention / NIC CNN / RAN models on grids with Ray Train; every run, "
                       "metric, plot and model goes to MLflow.")
    add_train_arguments(p)
    p.add_argument("--cv", action="store_true", help="k-fold cross-validation: one run per value of the cohort's "
                   "`fold` column, each fold the test set once (validation: the next fold); mean ± sd")
    p.set_defaults(func=_train)
