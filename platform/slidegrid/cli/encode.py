"""`slidegrid encode`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import sys

from .options import (
    EXIT_CODES_HELP,
    MIN_TISSUE_HELP,
    SLIDE_TABLE_MAX,
    ConfigOptions,
    add_keep_ink,
    add_mpp_override,
    add_placement,
    add_storage,
    batch_size_arg,
)


def _encode(args: argparse.Namespace) -> int:
    from ..encode import run_encode
    from ..io.manifest import exit_code, summarize

    config = args.options.build(args)
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
    """Arguments of `slidegrid encode` (shared with jobs/encode.py): the fields of EncodeConfig."""
    from ..encoders.learned import METHODS

    o = ConfigOptions(p, "slidegrid.encode:EncodeConfig")
    o.add("input", help="archive: folder, glob, s3://bucket/prefix, or cohort table (CSV/Parquet)")
    o.add("--out", required=True, help="grid store (local folder or s3:// prefix)")
    o.add("--encoder", help="mean-rgb, a foundation-model preset (e.g. uni2-h; `slidegrid encoders` lists them), "
          "timm:ARCH (e.g. timm:resnet34), or a learned encoder: " + " | ".join(METHODS) + " (see train-encoder)")
    o.add("--weights", help="local checkpoint (.safetensors/.bin/.pth/.pt), a downloaded snapshot folder "
          "(presets), MLflow model URI (models:/name/version), or 'random'. A preset without --weights is looked "
          "up in the local Hugging Face cache; hf-hub:ORG/NAME downloads it there. Nothing else is downloaded")
    o.add("--mpp", field="grid.mpp", type=float, help="target µm/px of the tiles (default: a preset's native one, "
          "else 0.5)")
    o.add("--tile-size", field="grid.tile_size", type=int, help="tile side in pixels at --mpp (default: a "
          "preset's native one, else 224)")
    o.add("--stride", field="grid.stride", type=int, help="grid step in pixels at --mpp (default: tile size)")
    o.add("--min-tissue", field="grid.min_tissue", type=float, help=MIN_TISSUE_HELP)
    add_keep_ink(o, "tissue.remove_ink")
    o.add("--tissue-mpp", field="tissue.mpp", type=float, help="resolution of the tissue mask (µm/px)")
    o.add("--batch-size", type=batch_size_arg,
          help="tiles per encoder batch, or auto (default): 64 on CPU; on a GPU batches of 512 run in the largest "
          "power-of-two chunks that fit and still speed the model up, probed once per actor")
    o.add("--dtype", choices=["float16", "float32"], help="stored embedding type")
    o.add("--amp", choices=["bf16", "fp16", "off"], help="autocast on GPU")
    o.add("--compile", field="torch_compile", action="store_true", help="torch.compile the encoder in each "
          "actor (faster big models on GPU once compiled; the first batches wait a minute or more for it)")
    o.add("--dihedral", action="store_true", help="also encode every tile rotated and mirrored (the 8 elements of "
          "D4, NIC §3.2): 8 embeddings per tile in the grid's `transform` column, 8x the encoding time; nic-cnn "
          "training and test-time averaging then use them (other readers get the untransformed tiles)")
    o.add("--overwrite", action="store_true", help="redo slides whose grids already exist")
    o.add("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else SQLite under --out)")
    o.add("--no-mlflow", field="mlflow", action="store_false", help="do not log the run to MLflow")
    o.add("--no-progress", field="progress", action="store_false", help="no progress bars")
    add_storage(o)
    add_mpp_override(o)
    add_placement(o, actors=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode a slide archive into grids of tile embeddings (Ray Data)",
                       description="Slides -> tissue -> tile grid -> decode -> encoder actors -> one Parquet "
                       "grid per slide + _manifest.parquet. Re-running skips finished slides. " + EXIT_CODES_HELP)
    add_encode_arguments(p)
    p.set_defaults(func=_encode)
