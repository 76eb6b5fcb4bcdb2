"""`slidegrid segment`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import sys

from ..io.storage import parse_storage_options
from .options import (
    EXIT_CODES_HELP,
    add_mpp_override,
    add_placement,
    add_storage,
)


def _segment(args: argparse.Namespace) -> int:
    from ..io.manifest import exit_code, summarize
    from ..segment import SegmentConfig, run_segment

    config = SegmentConfig(
        input=args.input, model=args.model, out=args.out, tile_size=args.tile_size, stride=args.stride,
        weighting=args.weighting, tta=not args.no_tta, members=args.members, heatmap_mpp=args.heatmap_mpp,
        threshold=args.threshold, min_tissue=args.min_tissue, batch_size=args.batch_size, actors=args.actors,
        data_cpus=args.data_cpus,
        overwrite=args.overwrite, tracking_uri=args.tracking_uri, mpp_override=args.mpp_override, reader=args.reader,
        storage_options=parse_storage_options(args.storage_options), progress=not args.no_progress)
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
    p.add_argument("input", help="archive: folder, glob, s3:// prefix, or cohort table")
    p.add_argument("--model", required=True, help="MLflow model URI (models:/NAME/VERSION) or OUT/ensemble.pt")
    p.add_argument("--out", required=True, help="output folder (or s3:// prefix)")
    p.add_argument("--tile-size", type=int, default=None, help="inference tile in px (default 4x the patch)")
    p.add_argument("--stride", type=int, default=None, help="tile step in px (default half a tile)")
    p.add_argument("--weighting", default="gaussian", help="gaussian | uniform averaging of overlaps")
    p.add_argument("--no-tta", action="store_true", help="no test-time augmentation (no aleatoric map)")
    p.add_argument("--members", type=int, default=None, help="use only the first N ensemble members")
    p.add_argument("--heatmap-mpp", type=float, default=8.0, help="heatmap resolution in µm/px (default 8)")
    p.add_argument("--threshold", type=float, default=0.5, help="tumour probability for GeoJSON regions")
    p.add_argument("--min-tissue", type=float, default=0.01, help="min tissue fraction of a segmented tile")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per model batch")
    p.add_argument("--overwrite", action="store_true", help="redo slides already done")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI the model is registered in")
    p.add_argument("--no-progress", action="store_true")
    add_storage(p)
    add_mpp_override(p)
    add_placement(p, actors=True)
    p.set_defaults(func=_segment)
