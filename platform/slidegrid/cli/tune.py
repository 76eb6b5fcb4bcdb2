"""`slidegrid tune`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .train import add_train_arguments, train_config


def _tune(args: argparse.Namespace) -> int:
    from ..train.aggregator.sweep import load_space, tune_sweep

    summary = tune_sweep(train_config(args), load_space(args.space), args.trials, args.max_concurrent,
                         args.grace_epochs)
    print(f"best {summary['metric']} = {summary['best_value']:.4f} with {summary['best_params']}")
    print(f"best checkpoint: {summary['best_checkpoint']}")
    print(f"saved: {args.out.rstrip('/')}/best.yaml; mlflow sweep run {summary['mlflow_run_id']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="sweep training hyperparameters (Ray Tune + ASHA)",
                       description="Ray Tune trials of Ray Train runs over a YAML search space, ASHA stopping the "
                       "weak ones early (a stopped trial frees its workers at once); OUT/best.yaml and MLflow runs "
                       "nested under the sweep.")
    add_train_arguments(p, concurrent=True)
    p.add_argument("--space", required=True, help="search space YAML (params: {lr: {loguniform: [1e-4, 1e-2]}})")
    p.add_argument("--trials", type=int, default=8, help="number of trials")
    p.add_argument("--grace-epochs", type=int, default=1, help="ASHA: epochs a trial runs before it may be stopped (default 1)")
    p.set_defaults(func=_tune)
