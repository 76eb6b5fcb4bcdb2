"""`slidegrid probe`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import (
    add_placement,
    batch_size_arg,
    print_outputs,
)


def _probe(args: argparse.Namespace) -> int:
    from ..probe_patches import ProbeConfig, format_table, run_probe

    config = ProbeConfig(patches=args.patches, mpp=args.mpp, encoder=args.encoder, weights=args.weights, out=args.out,
                         train_split=args.train_split, test_split=args.test_split, k=args.k,
                         random_twin=not args.no_random_twin, bootstrap_reps=args.bootstrap_reps,
                         batch_size=args.batch_size, actors=args.actors, data_cpus=args.data_cpus, amp=args.amp,
                         tracking_uri=args.tracking_uri, mlflow=not args.no_mlflow, progress=not args.no_progress)
    report = run_probe(config)
    d = report.dataset
    print(f"{config.encoder} ({config.weights or 'no weights'}) on {d['patches']}: {d['n_train']} {d['train_split']} / "
          f"{d['n_test']} {d['test_split']} patches, {d['patch_px']} px at {d['mpp']:g} µm/px"
          + (f", {d['duplicates_dropped']} duplicates left out" if d["duplicates_dropped"] else ""))
    print(format_table(report))
    for note in report.notes:
        print(note)
    print(f"wall time {report.seconds:.1f} s")
    print_outputs(report.tables, report.run_id, report.tracking_uri)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="score an encoder's frozen embeddings on a labelled patch set (linear probe, "
                       "k-NN) beside its random-weights twin",
                       description="Embeds the train and test splits of a patch set with encode's Ray Data actors, "
                       "fits a standardized logistic regression and a k-NN on the train split, and scores the test "
                       "split: accuracy, balanced accuracy and AUC with 95%% bootstrap CIs, for the encoder and "
                       "the same network with random weights (timm:, presets, learned encoders; none for "
                       "mean-rgb). Writes probe-<encoder>.csv/.json under --out and one MLflow run.")
    p.add_argument("--patches", required=True, help="patch folder (ROOT/<split>/<class>/*.png|jpg|tif, or "
                   "ROOT/<class>/...) or CSV table with columns path,label[,split] (paths relative to it); a "
                   "folder's index.csv with a duplicate_of column drops the marked copies")
    p.add_argument("--mpp", type=float, default=None, help="µm/px of the patches (required; PatchCamelyon 0.97)")
    p.add_argument("--encoder", default="mean-rgb", help="mean-rgb, a foundation-model preset (`slidegrid "
                   "encoders`), timm:ARCH, or a learned encoder: vae | contrastive | bigan | supervised")
    p.add_argument("--weights", default=None, help="as for encode: checkpoint file or folder, MLflow model URI, "
                   "hf-hub:ORG/NAME (downloads), or random; a preset without it is looked up in the local HF cache")
    p.add_argument("--out", default="slidegrid-probe", help="output folder (default ./slidegrid-probe; one "
                   "probe-<encoder>.csv/.json per encoder, one MLflow store)")
    p.add_argument("--train-split", default="train", help="split the probes are fitted on (default train)")
    p.add_argument("--test-split", default="test", help="split they are scored on (default test)")
    p.add_argument("--k", type=int, default=20, help="k-NN neighbours (default 20, as DINO and UNI)")
    p.add_argument("--no-random-twin", action="store_true", help="skip the random-weights twin")
    p.add_argument("--bootstrap-reps", type=int, default=1000, help="bootstrap resamples of the CIs (default 1000)")
    p.add_argument("--batch-size", type=batch_size_arg, default="auto", help="patches per encoder batch, or auto "
                   "(as encode)")
    p.add_argument("--amp", choices=["bf16", "fp16", "off"], default="bf16", help="autocast on GPU")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
                   "else SQLite under --out)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_placement(p, actors=True)
    p.set_defaults(func=_probe)
