"""`slidegrid train`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import (
    ConfigOptions,
    add_placement,
    add_storage,
    job_argument,
    metrics_text,
)


def _aggregators() -> str:
    from ..models import registered

    return " | ".join(registered("aggregator")) + " (default %(default)s)"


def add_train_arguments(p: argparse.ArgumentParser, concurrent: ConfigOptions | None = None) -> None:
    """Arguments of `slidegrid train` and `slidegrid tune` (its `concurrent` sweep options take --max-concurrent):
    the fields of TrainConfig, and --config, the YAML file of more of them."""
    # Unset options take the model's paper recipe, then --config's YAML, then TrainConfig's own defaults: the
    # help cannot name one default for them.
    o = ConfigOptions(p, "slidegrid.train.aggregator.config:TrainConfig", show_defaults=False)
    o.add("--grids", required=True, help="grid store written by `slidegrid encode`")
    o.add("--cohort", required=True, help="cohort table (slide_id, uri, label/target/annotation, fold)")
    o.add("--out", required=True, help="output folder (checkpoints, MLflow store, plots)")
    o.add("--model", help=_aggregators)
    o.add("--task", help="classification (default) | regression | segmentation")
    o.add("--recipe", choices=("paper", "none"),
          help="paper (default): the model's paper settings (optimizer, schedule in optimizer steps sized on the "
               "paper's cohort, augmentation; README 'Training recipes'); none: slidegrid's generic defaults. "
               "Explicit options still win and are recorded as recipe_overrides")
    job_argument(p, "--config", help="YAML file of training options (epochs, lr, optimizer, ...)")
    o.add("--epochs", type=int, help="training epochs (default: the recipe's)")
    o.add("--lr", type=float, help="learning rate (default: the recipe's)")
    o.add("--batch-size", type=int, help="slides (or crops, sub-grids) per optimizer step (default: the recipe's)")
    o.add("--val-fold", type=int, help="cohort fold for validation: early stopping and the model kept (default "
          "with --test-fold: the next fold)")
    o.add("--test-fold", type=int, help="cohort fold held out as the test set, scored once at the end with the "
          "selected model (test_* metrics with 95%% CIs); a `split` column (train|val|test) in the cohort does "
          "the same without fold flags")
    o.add("--storage", help="checkpoint storage (local path or s3://; default OUT/checkpoints)")
    o.add("--name", help="run name; the same name and storage resume a run")
    o.add("--tracking-uri", help="MLflow tracking URI (default: SQLite under --out)")
    o.add("--register-as", help="MLflow registered model name (default slidegrid-MODEL-TASK)")
    add_storage(o)
    add_placement(o, reads=False, train=True, concurrent=concurrent)


def train_config(args: argparse.Namespace):
    """The TrainConfig of a `train` or `tune` command line: recipe, then --config's YAML, then the flags given."""
    from ..train.aggregator.config import build_train_config

    return build_train_config(args.options.given(args), args.config)


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from ..train.aggregator.fit import cross_validate, run_train

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
    result = run_train(cfg)
    shown = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith(("val_", "train_loss"))}
    print(f"trained {cfg.model} ({cfg.task}) for {len(result.history)} epochs: {shown}")
    best = result.history[-1].get("best_epoch") if result.history else None
    if best is not None and best >= 0:  # history counts from 0, the epoch lines on the terminal from 1
        print(f"selected model: epoch {best + 1} of {len(result.history)} (lowest validation loss)")
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
    job_argument(p, "--cv", action="store_true", help="k-fold cross-validation: one run per value of the cohort's "
                   "`fold` column, each fold the test set once (validation: the next fold); mean ± sd")
    p.set_defaults(func=_train)
