"""`slidegrid segment`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import sys

from .options import (
    EXIT_CODES_HELP,
    ConfigOptions,
    add_mpp_override,
    add_placement,
    add_storage,
)


def _segment(args: argparse.Namespace) -> int:
    from ..io.manifest import exit_code, summarize
    from ..segment import run_segment

    config = args.options.build(args)
    report = run_segment(config)
    counts = summarize(report.results)
    print(f"slides: {counts['ok']} ok ({counts['reused']} already done), {counts['failed']} failed, "
          f"{counts['skipped_no_tissue']} without tissue")
    print(f"this run: {report.tiles} tiles in {report.seconds:.1f} s ({report.tiles_per_s:.1f} tiles/s)")
    for r in report.results:
        if r.status == "failed":
            print(f"failed: {r.slide_id}: {r.error}", file=sys.stderr)
    print(f"outputs: {args.out}  features: {report.features}")
    return exit_code(report.results)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="tumour heatmaps, uncertainty maps, GeoJSON and features for slides",
                       description="Overlapping tiles (Ray Data) through a segmentation ensemble with test-time "
                       "augmentation; per slide: heatmap.tif, aleatoric.tif, epistemic.tif, overlay.png, "
                       "tumour.geojson, features.json; OUT/features.csv and OUT/_manifest.parquet. " + EXIT_CODES_HELP)
    o = ConfigOptions(p, "slidegrid.segment:SegmentConfig")
    o.add("input", help="archive: folder, glob, s3:// prefix, or cohort table")
    o.add("--model", required=True, help="MLflow model URI (models:/NAME/VERSION) or OUT/ensemble.pt")
    o.add("--out", required=True, help="output folder (or s3:// prefix)")
    o.add("--tile-size", type=int, help="inference tile in px (default 4x the patch)")
    o.add("--stride", type=int, help="tile step in px (default half a tile)")
    o.add("--weighting", help="gaussian | uniform averaging of overlaps")
    o.add("--no-tta", field="tta", action="store_false", help="no test-time augmentation (no aleatoric map)")
    o.add("--members", type=int, help="use only the first N ensemble members")
    o.add("--heatmap-mpp", type=float, help="heatmap resolution in µm/px (default %(default)s)")
    o.add("--threshold", type=float, help="tumour probability for GeoJSON regions")
    o.add("--min-tissue", type=float, help="min tissue fraction of a segmented tile")
    o.add("--batch-size", type=int, help="tiles per model batch")
    o.add("--overwrite", action="store_true", help="redo slides already done")
    o.add("--tracking-uri", help="MLflow tracking URI the model is registered in")
    o.add("--no-progress", field="progress", action="store_false", help="no progress bars")
    add_storage(o)
    add_mpp_override(o)
    add_placement(o, actors=True)
    p.set_defaults(func=_segment)
