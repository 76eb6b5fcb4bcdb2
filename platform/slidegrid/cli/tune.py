"""`slidegrid tune`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import ConfigOptions
from .train import add_train_arguments, train_config


def _tune(args: argparse.Namespace) -> int:
    from ..train.aggregator.sweep import run_tune

    report = run_tune(args.sweep.build(args, train=train_config(args)))
    print(f"best {report.metric} = {report.best_value:.4f} with {report.best_params}")
    print(f"best checkpoint: {report.best_checkpoint}")
    print(f"saved: {report.best_yaml}; mlflow sweep run {report.mlflow_run_id}")
    return 0


def _space(path: str):
    from ..train.aggregator.sweep import load_space

    return load_space(path)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="sweep training hyperparameters (Ray Tune + ASHA)",
                       description="Ray Tune trials of Ray Train runs over a YAML search space, ASHA stopping the "
                       "weak ones early (a stopped trial frees its workers at once); OUT/best.yaml and MLflow runs "
                       "nested under the sweep.")
    sweep = ConfigOptions(p, "slidegrid.train.aggregator.sweep:TuneConfig", key="sweep")
    add_train_arguments(p, concurrent=sweep)
    sweep.add("--space", required=True, convert=_space,
              help="search space YAML (params: {lr: {loguniform: [1e-4, 1e-2]}})")
    sweep.add("--trials", type=int, help="number of trials")
    sweep.add("--grace-epochs", type=int, help="ASHA: epochs a trial runs before it may be stopped (default "
              "%(default)s)")
    p.set_defaults(func=_tune)
