"""`slidegrid encode`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import sys

from ..io.storage import parse_storage_options
from .options import (
    EXIT_CODES_HELP,
    MIN_TISSUE_HELP,
    SLIDE_TABLE_MAX,
    add_keep_ink,
    add_mpp_override,
    add_placement,
    add_storage,
    batch_size_arg,
)


def _encode(args: argparse.Namespace) -> int:
    from ..encode import EncodeConfig, run_encode
    from ..io.manifest import exit_code, summarize

    config = EncodeConfig(
        input=args.input, out=args.out, encoder=args.encoder, weights=args.weights, mpp=args.mpp,
        tile_size=args.tile_size, stride=args.stride, min_tissue=args.min_tissue, tissue_mpp=args.tissue_mpp,
        remove_ink=not args.keep_ink, batch_size=args.batch_size, torch_compile=args.compile, dtype=args.dtype,
        overwrite=args.overwrite, mpp_override=args.mpp_override, reader=args.reader, dihedral=args.dihedral,
        storage_options=parse_storage_options(args.storage_options), actors=args.actors, amp=args.amp,
        data_cpus=args.data_cpus, tracking_uri=args.tracking_uri, mlflow=not args.no_mlflow, progress=not args.no_progress)
    report = run_encode(config)
    results = report.results
    counts = summarize(results)
    if len(results) <= SLIDE_TABLE_MAX:
        print(f"{'slide':32s} {'status':18s} {'tiles':>7s} {'seconds':>8s}")
        for r in results:
            status = f"{r.status} (earlier run)" if r.reused else r.status
            print(f"{r.slide_id[:32]:32s} {status:18s} {r.tiles:7d} {r.seconds:8.1f}")
    print(f"slides: {counts['ok']} ok ({counts['reused']} already done), {counts['failed']} failed, "
          f"{counts['skipped_no_tissue']} without tissue, {counts['smaller_than_tile']} smaller than a tile, "
          f"{counts['skipped_not_a_slide']} skipped (not slides)")
    print(f"this run: {report.tiles} tiles in {report.seconds:.1f} s ({report.tiles_per_s:.1f} tiles/s)")
    for r in results:
        if r.status == "failed":
            print(f"failed: {r.slide_id}: {r.error}", file=sys.stderr)
    print(f"grids: {args.out}  manifest: {args.out.rstrip('/')}/_manifest.parquet")
    return exit_code(results)


def add_encode_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `slidegrid encode` (shared with jobs/encode.py)."""
    p.add_argument("input", help="archive: folder, glob, s3://bucket/prefix, or cohort table (CSV/Parquet)")
    p.add_argument("--out", required=True, help="grid store (local folder or s3:// prefix)")
    p.add_argument("--encoder", default="mean-rgb", help="mean-rgb, a foundation-model preset (e.g. uni2-h; "
                   "`slidegrid encoders` lists them), timm:ARCH (e.g. timm:resnet34), or a learned encoder: "
                   "vae | contrastive | bigan | supervised (see train-encoder)")
    p.add_argument("--weights", default=None, help="local checkpoint (.safetensors/.bin/.pth/.pt), a downloaded "
                   "snapshot folder (presets), MLflow model URI (models:/name/version), or 'random'. A preset "
                   "without --weights is looked up in the local Hugging Face cache; hf-hub:ORG/NAME downloads "
                   "it there. Nothing else is downloaded")
    p.add_argument("--mpp", type=float, default=None, help="target µm/px of the tiles (default: a preset's "
                   "native one, else 0.5)")
    p.add_argument("--tile-size", type=int, default=None, help="tile side in pixels at --mpp (default: a "
                   "preset's native one, else 224)")
    p.add_argument("--stride", type=int, default=None, help="grid step in pixels at --mpp (default: tile size)")
    p.add_argument("--min-tissue", type=float, default=0.25, help=MIN_TISSUE_HELP)
    add_keep_ink(p)
    p.add_argument("--tissue-mpp", type=float, default=8.0, help="resolution of the tissue mask (µm/px)")
    p.add_argument("--batch-size", type=batch_size_arg, default="auto",
                   help="tiles per encoder batch, or auto (default): 64 on CPU; on a GPU batches of 512 run in "
                   "the largest power-of-two chunks that fit and still speed the model up, probed once per actor")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="stored embedding type")
    p.add_argument("--amp", choices=["bf16", "fp16", "off"], default="bf16", help="autocast on GPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder in each actor (faster "
                   "big models on GPU once compiled; the first batches wait a minute or more for it)")
    p.add_argument("--dihedral", action="store_true", help="also encode every tile rotated and mirrored (the 8 "
                   "elements of D4, NIC §3.2): 8 embeddings per tile in the grid's `transform` column, 8x the "
                   "encoding time; nic-cnn training and test-time averaging then use them (other readers get "
                   "the untransformed tiles)")
    p.add_argument("--overwrite", action="store_true", help="redo slides whose grids already exist")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
                   "else SQLite under --out)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_storage(p)
    add_mpp_override(p)
    add_placement(p, actors=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode a slide archive into grids of tile embeddings (Ray Data)",
                       description="Slides -> tissue -> tile grid -> decode -> encoder actors -> one Parquet "
                       "grid per slide + _manifest.parquet. Re-running skips finished slides. " + EXIT_CODES_HELP)
    add_encode_arguments(p)
    p.set_defaults(func=_encode)
