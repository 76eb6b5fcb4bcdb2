"""`slidegrid pn-stage`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import (
    SLIDE_TABLE_MAX,
    ConfigOptions,
    add_storage,
    print_outputs,
)


def _pn_stage(args: argparse.Namespace) -> int:
    from ..analysis.pn_stage import METASTASIS_TYPES
    from ..analysis.pn_stage_run import run_pn_stage

    config = args.options.build(args)
    report = run_pn_stage(config)
    if len(report.patients) <= SLIDE_TABLE_MAX:
        print(f"{'patient':24s} {'nodes':>5s}  {'pN-stage':9s} {'predicted':9s}")
        for p in report.patients:
            mark = "" if not p["pn_stage"] or p["pn_stage"] == p["predicted"] else "  *"
            print(f"{p['patient'][:24]:24s} {p['nodes']:5d}  {p['pn_stage'] or '-':9s} {p['predicted']:9s}{mark}")
    if report.confusion is not None:
        print("node types (rows: true, columns: predicted)")
        print(" " * 10 + "".join(f"{t:>9s}" for t in METASTASIS_TYPES))
        for t, row in zip(METASTASIS_TYPES, report.confusion):
            print(f"{t:10s}" + "".join(f"{v:9d}" for v in row))
        print(f"node accuracy {report.node_accuracy:.4f} on {len(report.nodes)} nodes ({report.scheme}); "
              f"majority type alone {report.majority_accuracy:.4f}")
    if report.kappa is not None:
        print(f"pN-stage: quadratic kappa {report.kappa:.4f}, exact stage {report.stage_accuracy:.4f} on "
              f"{sum(bool(p['pn_stage']) for p in report.patients)} patients (truth: {report.truth})")
    else:
        print(f"pN-stage: {len(report.patients)} patients staged; the cohort gives no truth to score them against")
    print_outputs(report.tables, report.run_id, report.tracking_uri)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pn-stage", help="lymph-node metastasis types (RF ensemble) and patient pN-stages "
                       "(CAMELYON17) from segment's features.csv",
                       description="Types every lymph node (negative / itc / micro / macro) with the paper's "
                       "Random Forest ensemble (SMOTETomek-balanced) on the 32 heatmap features segment writes, "
                       "out-of-fold by patient (or fitted on --fit-cohort), stages each patient with CAMELYON17's "
                       "Table 3 rules, and scores nodes (accuracy, confusion) and stages (quadratic Cohen's kappa). "
                       "Writes nodes.csv, patients.csv, confusion.csv and one MLflow run.")
    o = ConfigOptions(p, "slidegrid.analysis.pn_stage_run:PnStageConfig")
    o.add("--features", required=True, help="features.csv written by `slidegrid segment`")
    o.add("--cohort", required=True, help="CSV: slide_id, patient_id (or patient), and a node's `metastasis` "
          "(negative|itc|micro|macro) and/or the patient's `pn_stage` (pN0|pN0(i+)|pN1mi|pN1|pN2; a row with an "
          "empty slide_id may carry it alone)")
    o.add("--out", help="output folder (default: pn-stage/ beside --features)")
    o.add("--folds", type=int, help="out-of-fold typing: folds of whole patients (default %(default)s)")
    o.add("--fit-cohort", help="fit the forests on this cohort's nodes (it needs `metastasis`) and type --cohort's "
          "nodes with them, instead of out-of-fold")
    o.add("--fit-features", help="features.csv of the --fit-cohort slides (default --features)")
    o.add("--seed", field="ensemble.seed", type=int, help="seed of the folds, node subsets, SMOTE and forests")
    o.add("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else SQLite under --out)")
    add_storage(o)
    p.set_defaults(func=_pn_stage)
