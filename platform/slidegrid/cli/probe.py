"""`slidegrid probe`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import (
    ConfigOptions,
    add_placement,
    batch_size_arg,
    print_outputs,
)


def _probe(args: argparse.Namespace) -> int:
    from ..probe_patches import format_table, run_probe

    config = args.options.build(args)
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
                       "split: accuracy, balanced accuracy and AUC with 95% bootstrap CIs, for the encoder and "
                       "the same network with random weights (timm:, presets, learned encoders; none for "
                       "mean-rgb). Writes probe-<encoder>.csv/.json under --out and one MLflow run.")
    from ..encoders.learned import METHODS

    o = ConfigOptions(p, "slidegrid.probe_patches:ProbeConfig")
    o.add("--patches", required=True, help="patch folder (ROOT/<split>/<class>/*.png|jpg|tif, or ROOT/<class>/...) "
          "or CSV table with columns path,label[,split] (paths relative to it); a folder's index.csv with a "
          "duplicate_of column drops the marked copies")
    o.add("--mpp", type=float, help="µm/px of the patches (required; PatchCamelyon 0.97)")
    o.add("--encoder", help="mean-rgb, a foundation-model preset (`slidegrid encoders`), timm:ARCH, or a learned "
          "encoder: " + " | ".join(METHODS))
    o.add("--weights", help="as for encode: checkpoint file or folder, MLflow model URI, hf-hub:ORG/NAME "
          "(downloads), or random; a preset without it is looked up in the local HF cache")
    o.add("--out", help="output folder (default ./%(default)s; one probe-<encoder>.csv/.json per encoder, one "
          "MLflow store)")
    o.add("--train-split", help="split the probes are fitted on (default %(default)s)")
    o.add("--test-split", help="split they are scored on (default %(default)s)")
    o.add("--k", type=int, help="k-NN neighbours (default %(default)s, as DINO and UNI)")
    o.add("--no-random-twin", field="random_twin", action="store_false", help="skip the random-weights twin")
    o.add("--bootstrap-reps", type=int, help="bootstrap resamples of the CIs (default %(default)s)")
    o.add("--batch-size", type=batch_size_arg, help="patches per encoder batch, or auto (as encode)")
    o.add("--amp", choices=["bf16", "fp16", "off"], help="autocast on GPU")
    o.add("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else SQLite under --out)")
    o.add("--no-mlflow", field="mlflow", action="store_false", help="do not log the run to MLflow")
    o.add("--no-progress", field="progress", action="store_false", help="no progress bars")
    add_placement(o, actors=True)
    p.set_defaults(func=_probe)
