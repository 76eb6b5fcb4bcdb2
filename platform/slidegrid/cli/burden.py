"""`slidegrid burden`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import sys

from .options import (
    EXIT_CODES_HELP,
    SLIDE_TABLE_MAX,
    ConfigOptions,
    add_mpp_override,
    add_storage,
)


def _burden(args: argparse.Namespace) -> int:
    from ..analysis.burden_run import run_burden

    config = args.options.build(args)
    report = run_burden(config)
    if len(report.rows) <= SLIDE_TABLE_MAX:
        print(f"{'slide':32s} {'viable mm²':>11s} {'whole mm²':>11s} {'burden':>7s}")
        for r in report.rows:
            if r["status"] == "ok":
                print(f"{r['slide_id'][:32]:32s} {r['viable_mm2']:11.3f} {r['whole_mm2']:11.3f} {r['burden']:7.3f}")
    for r in report.rows:
        if r["status"] == "failed":
            print(f"failed: {r['slide_id']}: {r['error']}", file=sys.stderr)
    print(f"slides: {len(report.rows) - report.failed} ok, {report.failed} failed, {report.not_segmented} not "
          f"segmented (status other than ok in the segment manifest)")
    print(f"table: {report.table}")
    print(f"mlflow: run {report.run_id} in {report.tracking_uri}")
    return 3 if report.failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("burden", help="viable tumour burden per slide (PAIP) from segment's heatmaps",
                       description="Per slide segmented ok: the heatmap binarised and cleaned (opening, small "
                       "objects and holes), the convex hull of the viable tumour intersected with the slide's "
                       "tissue mask as the whole tumour, burden = viable / whole area, areas in mm². Writes "
                       "burden.csv and one MLflow run. " + EXIT_CODES_HELP)
    o = ConfigOptions(p, "slidegrid.analysis.burden_run:BurdenConfig")
    o.add("--segment-out", required=True, help="output folder of `slidegrid segment` (its --out)")
    o.add("--out", help="output folder (default: --segment-out)")
    o.add("--threshold", field="cleanup.threshold", type=float, help="viable tumour probability (default "
          "%(default)s)")
    o.add("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else SQLite under --out)")
    add_storage(o)
    add_mpp_override(o)
    p.set_defaults(func=_burden)
