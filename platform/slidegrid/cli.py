"""The `slidegrid` command: one subcommand per job, each a thin call into the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from . import __version__
from .errors import SlidegridError
from .io.storage import parse_storage_options
from .runtime import ray_log_path, ray_logs_to

Handler = Callable[[argparse.Namespace], int]


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-options", metavar="JSON", default=None,
                   help="fsspec options for remote URIs as JSON (default: AWS env/config, AWS_ENDPOINT_URL)")


def _add_placement(p: argparse.ArgumentParser, *, reads: bool = True, actors: bool = False, train: bool = False,
                   concurrent: bool = False) -> None:
    """Flags that override the resource plan (placement.py); its rule goes in the command's --help."""
    from .placement import DATA_SHARE, START_TIMEOUT_S

    p.epilog = ("Placement is planned from the cluster's resources (a local Ray, or the cluster at RAY_ADDRESS)"
                + (" so that Ray Data's read tasks always keep a CPU" if reads else "")
                + "; the flags under 'placement' override it (README: Placement).")
    g = p.add_argument_group("placement")
    if actors:
        g.add_argument("--actors", type=int, default=None, metavar="N",
                       help="model actors (default: one per GPU; else 1 CPU actor, shrunk to what the reads leave)")
    if train:
        g.add_argument("--workers", type=int, default=None, metavar="N",
                       help="Ray Train workers per run (default 1)")
        g.add_argument("--gpus-per-worker", type=float, default=None, metavar="N",
                       help="GPUs per Ray Train worker (default 0: CPU training)")
        g.add_argument("--cpus-per-worker", type=float, default=None, metavar="N",
                       help="CPUs per Ray Train worker (default 1; an equal share of what is left when even one "
                            "run does not fit whole)")
    if reads:
        g.add_argument("--data-cpus", type=float, default=None, metavar="N",
                       help=f"CPUs no actor or Train worker may take, kept for Ray Data's read tasks (default: "
                            f"{DATA_SHARE * 100:.0f}%% of the cluster's CPUs, at least 1)")
    if train:
        g.add_argument("--start-timeout", dest="start_timeout_s", type=float, default=None, metavar="S",
                       help=f"seconds a Train run may wait for its workers before it fails (default {START_TIMEOUT_S:g})")
    if concurrent:
        g.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                       help="Train runs (trials, members) at once (default: as many as the cluster fits)")


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The named options the user set (None: unset, so the config's own default applies)."""
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


MIN_TISSUE_HELP = ("min tissue fraction of a kept tile, over the whole tile (edge tiles are padded: outside the "
                   "slide is glass)")


def _add_keep_ink(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-ink", action="store_true",
                   help="keep pen and marker ink in the tissue mask (for stains that are blue or green themselves: "
                        "IHC counterstain, Alcian blue, trichrome)")


def _add_mpp_override(p: argparse.ArgumentParser) -> None:
    from .io.readers import READER_HELP, READERS

    p.add_argument("--mpp-override", type=float, default=None, metavar="MPP",
                   help="level-0 µm/px for slides whose metadata lacks it or is implausible")
    p.add_argument("--reader", choices=READERS, default="auto", help=READER_HELP)


# -- info ---------------------------------------------------------------------------------------

def _info(args: argparse.Namespace) -> int:
    from .io.slides import open_slide

    with open_slide(args.uri, parse_storage_options(args.storage_options), args.mpp_override, args.reader) as s:
        info = s.info
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    mpp = f"{info.mpp_x:.4f} × {info.mpp_y:.4f} µm/px ({info.mpp_source})" if info.mpp_x else "unknown"
    if any("implausible" in w for w in info.warnings):
        mpp += " — implausible, ignored: pass --mpp-override"
    print(f"uri:        {info.uri}")
    print(f"vendor:     {info.vendor or 'unknown'}")
    print(f"reader:     {info.reader}")
    print(f"dimensions: {info.dimensions[0]} × {info.dimensions[1]} px")
    print(f"mpp:        {mpp}")
    print(f"objective:  {info.objective_power or 'unknown'}")
    print(f"file size:  {info.file_size} bytes")
    print(f"levels:     {info.level_count}")
    for lvl, (dims, ds) in enumerate(zip(info.level_dimensions, info.level_downsamples)):
        print(f"  {lvl}: {dims[0]} × {dims[1]}  downsample {ds:.3f}")
    for w in info.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _register_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a slide's metadata (levels, mpp, vendor)",
                       description="Open a slide (path, file://, s3://, any fsspec URL) and print its metadata.")
    p.add_argument("uri", help="slide path or URI")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_storage(p)
    _add_mpp_override(p)
    p.set_defaults(func=_info)


# -- synth / tissue / tiles ---------------------------------------------------------------------

def _synth(args: argparse.Namespace) -> int:
    from .synth.slides import synthesize_archive

    cohort = synthesize_archive(args.outdir, n=args.n, size=args.size, seed=args.seed, mpp=args.mpp,
                                tumour_rate=args.tumour_rate, progress=not args.no_progress,
                                tumour_radius_um=tuple(args.tumour_radius_um), texture_from=args.texture_from,
                                split=args.split, patch_mpp=args.patch_mpp)
    print(f"wrote {args.n} slides and {cohort}")
    if args.texture_from:
        with open(os.path.join(args.outdir, "texture.json")) as f:
            rep = json.load(f)
        for name in ("normal", "tumour"):
            r = rep[name]
            print(f"{name} cells: {r['cells']} drawn from {r['patches']} {rep['split']!r} patches, "
                  f"{r['distinct_used']} used, {r['mean_uses_per_used_patch']} times each on average (max {r['max_uses']})")
    return 0


def _register_synth(sub: argparse._SubParsersAction) -> None:
    from .synth.slides import SyntheticSpec

    p = sub.add_parser("synth", help="write synthetic H&E-like pyramidal slides with ground truth",
                       description="Synthetic slides (tumour / normal), GeoJSON + PNG tumour masks, cohort.csv. "
                                   "Tissue is procedural, or with --texture-from tiled from real H&E patches of one "
                                   "split (README: Real-texture cohorts).")
    p.add_argument("outdir", help="output folder")
    p.add_argument("--n", type=int, default=8, help="number of slides")
    p.add_argument("--size", type=int, default=4096, help="slide width in pixels (height is 3/4 of it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mpp", type=float, default=None,
                   help="level-0 µm/px (default 0.5; texture slides are written at --patch-mpp, and a different "
                        "--mpp is refused)")
    p.add_argument("--tumour-rate", type=float, default=0.5, help="fraction of slides with tumour")
    lo, hi = SyntheticSpec.tumour_radius_um
    p.add_argument("--tumour-radius-um", type=float, nargs=2, default=[lo, hi], metavar=("MIN", "MAX"),
                   help=f"tumour radius range in µm (default {lo:g} {hi:g}; capped at 0.3 of its tissue blob)")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("real texture")
    g.add_argument("--texture-from", metavar="PATCH_ROOT", default=None,
                   help="tile tissue from the real patches of PATCH_ROOT/<split>/<0|1>/ (0 normal, 1 tumour; "
                        "PATCH_ROOT/index.csv used when present, its duplicate_of rows skipped), e.g. "
                        "../shared/data/realworld/patches/pcam; level 0 is lossless (Deflate), the tumour truth is "
                        "the cells holding tumour patches; texture.json says how often patches repeat")
    g.add_argument("--split", default=None, metavar="S",
                   help="the patch split to draw from (train, valid or test for PCam): one split per cohort role, "
                        "so no patch is in two roles")
    g.add_argument("--patch-mpp", type=float, default=None, metavar="MPP",
                   help="the patches' µm/px, also the slides' (default 0.97: PatchCamelyon, Camelyon16 at 10x)")
    p.set_defaults(func=_synth)


def _tissue(args: argparse.Namespace) -> int:
    from .geometry.tissue import TissueConfig, tissue_mask
    from .io.archive import safe_slide_id
    from .io.slides import open_slide
    from .io.storage import join
    from .viz import overlay, save_png

    opts = parse_storage_options(args.storage_options)
    with open_slide(args.uri, opts, args.mpp_override, args.reader) as s:
        mask = tissue_mask(s, TissueConfig(mpp=args.mpp, remove_ink=not args.keep_ink))
        thumb = s.thumbnail(max(args.overlay_mpp or mask.mpp, *s.mpp_xy))
    sid = safe_slide_id(args.uri)
    # --out may be a folder or an object-store prefix: save_png writes through storage.atomic_write.
    save_png(mask.mask.astype("uint8") * 255, join(args.out, f"{sid}_tissue_mask.png"), opts)
    shown = overlay(thumb, mask.mask)
    if mask.ink is not None and mask.ink.any():
        shown = overlay(shown, mask.ink, (255, 0, 255), 0.3)
    save_png(shown, join(args.out, f"{sid}_tissue_overlay.png"), opts)
    print(f"tissue fraction: {mask.fraction:.3f}, ink removed: {mask.ink_fraction:.3f} (mask "
          f"{mask.mask.shape[1]}x{mask.mask.shape[0]} at {mask.mpp:g} µm/px) -> {args.out}")
    return 0


def _register_tissue(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tissue", help="tissue mask of a slide (mask PNG + overlay PNG)",
                       description="Tissue mask of a slide (DigiPathAI's recipe with pen ink removed first): the mask "
                                   "PNG, and an overlay PNG with the tissue in green and the removed ink in magenta.")
    p.add_argument("uri", help="slide path or URI")
    p.add_argument("--out", required=True, help="output folder (or object-store prefix)")
    p.add_argument("--mpp", type=float, default=8.0, help="mask resolution in µm/px (default 8)")
    p.add_argument("--overlay-mpp", type=float, default=None, help="overlay resolution in µm/px (default: --mpp)")
    _add_keep_ink(p)
    _add_storage(p)
    _add_mpp_override(p)
    p.set_defaults(func=_tissue)


def _tiles(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from .geometry.tiling import GridSpec, tile_grid
    from .geometry.tissue import TissueConfig, tissue_mask
    from .io.slides import open_slide
    from .io.storage import atomic_write

    spec = GridSpec(mpp=args.mpp, tile_size=args.tile_size, stride=args.stride, min_tissue=args.min_tissue)
    opts = parse_storage_options(args.storage_options)
    with open_slide(args.uri, opts, args.mpp_override, args.reader) as s:
        grid = tile_grid(s.info.dimensions, s.mpp_xy, spec, tissue_mask(s, TissueConfig(remove_ink=not args.keep_ink)))
    with atomic_write(args.out, opts) as f:
        pq.write_table(grid.to_table(source_uri=args.uri), f)
    print(f"{len(grid)} tiles kept on a {grid.shape[0]}x{grid.shape[1]} grid -> {args.out}")
    return 0


def _register_tiles(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiles", help="tile grid coordinates of a slide (Parquet)")
    p.add_argument("uri", help="slide path or URI")
    p.add_argument("--mpp", type=float, default=0.5, help="target µm/px")
    p.add_argument("--tile-size", type=int, default=224, help="tile side in pixels at --mpp")
    p.add_argument("--stride", type=int, default=None, help="step in pixels at --mpp (default: tile size)")
    p.add_argument("--min-tissue", type=float, default=0.25, help=MIN_TISSUE_HELP)
    p.add_argument("--out", required=True, help="Parquet file to write")
    _add_keep_ink(p)
    _add_storage(p)
    _add_mpp_override(p)
    p.set_defaults(func=_tiles)


# -- encoders -----------------------------------------------------------------------------------

def _encoders(args: argparse.Namespace) -> int:
    from .encoders.listing import catalogue, table

    cat = catalogue()
    if args.json:
        print(json.dumps(cat, indent=2))
    else:
        print("\n".join(table(cat)))
    return 0


def _register_encoders(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encoders", help="list the tile encoders: foundation-model presets (weights found locally "
                       "or not), mean-rgb, timm:ARCH and the learned ones",
                       description="Every foundation-model preset with its embedding size, parameters, native tile "
                       "size and µm/px, licence, whether its weights are gated, and where its weights are in the "
                       "local Hugging Face cache (nothing is downloaded); then the other encoders.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_encoders)


# -- encode / show ------------------------------------------------------------------------------

def _encode(args: argparse.Namespace) -> int:
    from .encode import EncodeConfig, run_encode
    from .io.manifest import exit_code, summarize

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


# Archives longer than this get counts only; every slide's row is in the manifest anyway.
SLIDE_TABLE_MAX = 50
# The exit codes of the archive commands (io.manifest.exit_code, and main for 2 and 130).
EXIT_CODES_HELP = ("Exit codes: 0 every slide ok or skipped, 2 bad configuration or input, 3 some slides failed "
                   "(the summary line counts them), 130 interrupted.")


def _batch_size(value: str) -> int | str:
    """--batch-size: "auto" or an integer (checked by EncodeConfig)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer or auto") from None


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
    _add_keep_ink(p)
    p.add_argument("--tissue-mpp", type=float, default=8.0, help="resolution of the tissue mask (µm/px)")
    p.add_argument("--batch-size", type=_batch_size, default="auto",
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
    _add_storage(p)
    _add_mpp_override(p)
    _add_placement(p, actors=True)


def _register_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode a slide archive into grids of tile embeddings (Ray Data)",
                       description="Slides -> tissue -> tile grid -> decode -> encoder actors -> one Parquet "
                       "grid per slide + _manifest.parquet. Re-running skips finished slides. " + EXIT_CODES_HELP)
    add_encode_arguments(p)
    p.set_defaults(func=_encode)


def _show(args: argparse.Namespace) -> int:
    from .io.grids import read_grid
    from .preview import grid_preview
    from .viz import save_png

    opts = parse_storage_options(args.storage_options)
    grid = read_grid(args.grid, opts)
    save_png(grid_preview(grid, opts, height=args.height), args.out)
    h, w = grid.shape
    print(f"{args.out}: {len(grid.row)} tiles on a {h}x{w} grid, C={grid.code_size}")
    return 0


def _register_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="render a grid (3 principal components as RGB) beside the slide thumbnail")
    p.add_argument("grid", help="a grid file (<grids>/<slide_id>.parquet)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--height", type=int, default=512, help="image height in pixels")
    _add_storage(p)
    p.set_defaults(func=_show)


def _print_outputs(tables: dict[str, str], run_id: str | None, tracking_uri: str | None) -> None:
    """The closing lines of an analysis command: where its tables went and its MLflow run (when logged)."""
    print("tables: " + "  ".join(tables.values()))
    if run_id:
        print(f"mlflow: run {run_id} in {tracking_uri}")


# -- probe (frozen encoders on a labelled patch set) ---------------------------------------------

def _probe(args: argparse.Namespace) -> int:
    from .probe_patches import ProbeConfig, format_table, run_probe

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
    _print_outputs(report.tables, report.run_id, report.tracking_uri)
    return 0


def _register_probe(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--batch-size", type=_batch_size, default="auto", help="patches per encoder batch, or auto "
                   "(as encode)")
    p.add_argument("--amp", choices=["bf16", "fp16", "off"], default="bf16", help="autocast on GPU")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
                   "else SQLite under --out)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_placement(p, actors=True)
    p.set_defaults(func=_probe)


# -- train / tune / predict ---------------------------------------------------------------------

def add_train_arguments(p: argparse.ArgumentParser, concurrent: bool = False) -> None:
    """Arguments of `slidegrid train` and (`concurrent` runs) `slidegrid tune`."""
    p.add_argument("--grids", required=True, help="grid store written by `slidegrid encode`")
    p.add_argument("--cohort", required=True, help="cohort table (slide_id, uri, label/target/annotation, fold)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, MLflow store, plots)")
    p.add_argument("--model", default=None, help="attention | nic-cnn | ran-cnn | ran-lstm (default attention)")
    p.add_argument("--task", default=None, help="classification | regression | segmentation")
    p.add_argument("--recipe", default=None, choices=("paper", "none"),
                   help="paper (default): the model's paper settings (optimizer, schedule in optimizer steps sized "
                        "on the paper's cohort, augmentation; README 'Training recipes'); none: slidegrid's "
                        "generic defaults. Explicit options still win and are recorded as recipe_overrides")
    p.add_argument("--config", default=None, help="YAML file of training options (epochs, lr, optimizer, ...)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--val-fold", type=int, default=None, help="cohort fold for validation: early stopping and "
                   "the model kept (default with --test-fold: the next fold)")
    p.add_argument("--test-fold", type=int, default=None, help="cohort fold held out as the test set, scored once "
                   "at the end with the selected model (test_* metrics with 95%% CIs); a `split` column "
                   "(train|val|test) in the cohort does the same without fold flags")
    p.add_argument("--storage", default=None, help="checkpoint storage (local path or s3://; default OUT/checkpoints)")
    p.add_argument("--name", default=None, help="run name; the same name and storage resume a run")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite under --out)")
    p.add_argument("--register-as", default=None, help="MLflow registered model name")
    _add_storage(p)
    _add_placement(p, reads=False, train=True, concurrent=concurrent)


def _train_config(args: argparse.Namespace):
    from .train.aggregator.config import build_train_config

    overrides = {k: getattr(args, k) for k in ("grids", "cohort", "out", "model", "task", "recipe", "epochs",
                                               "lr", "batch_size", "val_fold", "test_fold", "workers", "gpus_per_worker",
                                               "storage", "name", "tracking_uri", "register_as", "cpus_per_worker",
                                               "start_timeout_s")}
    overrides["storage_options"] = parse_storage_options(args.storage_options) or None
    return build_train_config(overrides, args.config)


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from .train.aggregator.fit import cross_validate, fit

    cfg = _train_config(args)
    if args.cv:
        per_fold = cross_validate(cfg)
        for fold, result in per_fold.items():
            print(f"test fold {fold}: {_metrics_text(result.test)}  model: {result.model_uri}")
        keys = [k for k in next(iter(per_fold.values())).test if "_ci_" not in k]
        values = {k: np.array([r.test[k] for r in per_fold.values()]) for k in keys}
        print(f"{len(per_fold)}-fold cross-validation, each fold the test set once (validation: the next fold): "
              + ", ".join(f"{k} {v.mean():.4f} ± {v.std(ddof=1):.4f}" for k, v in values.items()))
        return 0
    result = fit(cfg)
    shown = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith(("val_", "train_loss"))}
    print(f"trained {cfg.model} ({cfg.task}) for {len(result.history)} epochs: {shown}")
    best = result.history[-1].get("best_epoch") if result.history else None
    print(f"selected model: epoch {best} (lowest validation loss)")
    if result.test:
        print(f"test set, scored once: {_metrics_text(result.test)}")
    else:
        print("no test set (pass --test-fold or a `split` column): the validation figures above chose the model "
              "and are not a held-out estimate")
    print(f"checkpoint: {result.checkpoint_dir}")
    print(f"model: {result.model_uri}")
    return 0


def _metrics_text(scored: dict[str, float]) -> str:
    """'test_auc 0.91 [0.82, 0.97], ...': each metric with its 95% bootstrap interval (losses and counts left out)."""
    return ", ".join(f"{k} {v:.4f} [{scored[k + '_ci_low']:.4f}, {scored[k + '_ci_high']:.4f}]"
                     for k, v in scored.items() if k + "_ci_low" in scored)


def _register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a whole-slide aggregator on grids (Ray Train, MLflow)",
                       description="Train attention / NIC CNN / RAN models on grids with Ray Train; every run, "
                       "metric, plot and model goes to MLflow.")
    add_train_arguments(p)
    p.add_argument("--cv", action="store_true", help="k-fold cross-validation: one run per value of the cohort's "
                   "`fold` column, each fold the test set once (validation: the next fold); mean ± sd")
    p.set_defaults(func=_train)


def _tune(args: argparse.Namespace) -> int:
    from .train.aggregator.sweep import load_space, tune_sweep

    summary = tune_sweep(_train_config(args), load_space(args.space), args.trials, args.max_concurrent,
                         args.grace_epochs)
    print(f"best {summary['metric']} = {summary['best_value']:.4f} with {summary['best_params']}")
    print(f"best checkpoint: {summary['best_checkpoint']}")
    print(f"saved: {args.out.rstrip('/')}/best.yaml; mlflow sweep run {summary['mlflow_run_id']}")
    return 0


def _register_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="sweep training hyperparameters (Ray Tune + ASHA)",
                       description="Ray Tune trials of Ray Train runs over a YAML search space, ASHA stopping the "
                       "weak ones early (a stopped trial frees its workers at once); OUT/best.yaml and MLflow runs "
                       "nested under the sweep.")
    add_train_arguments(p, concurrent=True)
    p.add_argument("--space", required=True, help="search space YAML (params: {lr: {loguniform: [1e-4, 1e-2]}})")
    p.add_argument("--trials", type=int, default=8, help="number of trials")
    p.add_argument("--grace-epochs", type=int, default=1, help="ASHA: epochs a trial runs before it may be stopped (default 1)")
    p.set_defaults(func=_tune)


def _predict(args: argparse.Namespace) -> int:
    from .predict import predict

    path = predict(args.grids, args.model, args.out, args.tracking_uri, not args.no_heatmaps,
                   parse_storage_options(args.storage_options), args.cohort)
    print(f"predictions: {path}")
    if args.cohort:
        with open(os.path.join(args.out, "metrics.json")) as f:
            scored = json.load(f)
        print(f"scored against {args.cohort}: " + (f"{_metrics_text(scored)} on {int(scored['slides'])} slides"
                                                   if scored else "the cohort labels none of the predicted slides"))
    return 0


def _register_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="apply a trained aggregator to grids: predictions.csv + heatmaps")
    p.add_argument("--grids", required=True, help="grid store")
    p.add_argument("--model", required=True, help="MLflow model URI (models:/name/version or runs:/id/model)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI the model is registered in")
    p.add_argument("--no-heatmaps", action="store_true", help="skip heatmap PNGs")
    p.add_argument("--cohort", default=None, help="cohort table with labels (or targets): score the predicted "
                   "slides it labels (AUC, accuracy / Spearman with 95%% CIs) into OUT/metrics.json")
    _add_storage(p)
    p.set_defaults(func=_predict)


# -- train-encoder ------------------------------------------------------------------------------

def _train_encoder(args: argparse.Namespace) -> int:
    from .train.encoder.config import EncoderTrainConfig
    from .train.encoder.fit import fit_encoder

    cfg = EncoderTrainConfig(
        input=args.input, out=args.out, method=args.method, code_size=args.code_size, tile_size=args.tile_size,
        mpp=args.mpp, width=args.width, depth=args.depth, epochs=args.epochs, tiles=args.tiles,
        batch_size=args.batch_size, lr=args.lr, gamma=args.gamma, augment=not args.no_augment,
        min_tissue=args.min_tissue, tissue_mpp=args.tissue_mpp, cpus_per_worker=args.cpus_per_worker,
        storage=args.storage,
        **_given(args, "workers", "gpus_per_worker", "data_cpus", "start_timeout_s"),
        name=args.name, tracking_uri=args.tracking_uri, register_as=args.register_as, mlflow=not args.no_mlflow,
        seed=args.seed, storage_options=parse_storage_options(args.storage_options) or {},
        train_split=args.train_split, val_split=args.val_split, val_tiles=args.val_tiles, crop_min=args.crop_min)
    result = fit_encoder(cfg)
    first, last = result.history[0], result.history[-1]
    print(f"trained the {cfg.method} encoder (C={cfg.code_size}) for {len(result.history)} epochs: loss "
          f"{first['train_loss']:.4g} -> {last['train_loss']:.4g}, {last['tiles_per_s']:.1f} tiles/s")
    if "val_loss" in last:
        kept = (f"epoch {result.best_epoch + 1} (lowest validation loss "
                f"{result.history[result.best_epoch]['val_loss']:.4g})" if result.best_epoch is not None
                else "the last epoch")
        print(f"validation on split {cfg.val_split!r}: loss {first['val_loss']:.4g} -> {last['val_loss']:.4g}; "
              f"kept {kept}")
    print(f"encoder: {result.encoder_file}" + (f"  model: {result.model_uri}" if result.model_uri else ""))
    print(f"encode with: slidegrid encode INPUT --out GRIDS --encoder {cfg.method} --weights "
          f"{result.model_uri or result.encoder_file} --tile-size {cfg.tile_size} --mpp {cfg.mpp:g}")
    return 0


def _register_train_encoder(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-encoder", help="learn a tile encoder from the archive (VAE, contrastive, BiGAN, "
                       "supervised; Ray Train, MLflow)",
                       description="NIC's unsupervised encoders (VAE, contrastive Siamese, BiGAN) or RAN's "
                       "supervised tile classifier, trained with Ray Train on tiles streamed from the slides by "
                       "Ray Data; writes OUT/encoder-METHOD.pt and registers it in MLflow. Use it with "
                       "`slidegrid encode --encoder METHOD --weights FILE|models:/NAME/VERSION`.")
    p.add_argument("--input", required=True, help="archive: folder, glob, s3:// prefix or cohort table "
                   "(supervised: a cohort with an `annotation` column); or, with --train-split, a labelled patch "
                   "set: ROOT/<split>/<class>/*.png|jpg or a path,label,split CSV (needs --mpp)")
    from .encoders.learned import METHODS

    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--out", required=True, help="output folder (encoder file, checkpoints, MLflow store)")
    p.add_argument("--code-size", type=int, default=128, help="embedding size C (NIC: 128)")
    p.add_argument("--tile-size", type=int, default=None, help="tile side in pixels at --mpp (default: NIC's 128 "
                   "on an archive, the patches' side on a patch set)")
    p.add_argument("--mpp", type=float, default=None, help="µm/px of the tiles (default 0.5 on an archive); a "
                   "patch set's pixel size, required there (PatchCamelyon: 0.97)")
    p.add_argument("--train-split", default=None, help="patch set input: the split to train on (PCam: train); "
                   "self-supervised methods ignore its labels, supervised uses them")
    p.add_argument("--val-split", default=None, help="patch set input: the split scored every epoch (PCam: "
                   "valid; never the test split); the epoch of lowest validation loss is kept (BiGAN: the last)")
    p.add_argument("--val-tiles", type=int, default=1024, help="validation patches (contrastive: pairs) per epoch")
    p.add_argument("--crop-min", type=int, default=None, help="contrastive on patches: crops of a pair have "
                   "sides drawn from [CROP_MIN, tile size] px (default 2/3 of the tile size: 64 of 96)")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv layer (doubling per layer)")
    p.add_argument("--depth", type=int, default=4, help="stride-2 conv layers (tile size must divide by 2^depth)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--tiles", type=int, default=4096, help="training tiles (contrastive: pairs) per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="Adam step (default 1e-3; BiGAN 2e-4)")
    p.add_argument("--gamma", type=float, default=1.0, help="VAE: weight of the KL term (NIC Eq. 3)")
    p.add_argument("--no-augment", action="store_true", help="no augmentation of single tiles (contrastive "
                   "pairs are always augmented)")
    p.add_argument("--min-tissue", type=float, default=0.5, help="min tissue fraction of a training tile")
    p.add_argument("--tissue-mpp", type=float, default=8.0, help="resolution of the tissue mask (µm/px)")
    p.add_argument("--storage", default=None, help="checkpoint storage (default OUT/checkpoints)")
    p.add_argument("--name", default=None, help="run name; the same name and storage resume a run")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite under --out)")
    p.add_argument("--register-as", default=None, help="MLflow registered model name "
                   "(default slidegrid-encoder-METHOD)")
    p.add_argument("--no-mlflow", action="store_true", help="do not track or register the run")
    p.add_argument("--seed", type=int, default=0)
    _add_storage(p)
    _add_placement(p, train=True)
    p.set_defaults(func=_train_encoder)


# -- train-seg / segment ------------------------------------------------------------------------

def _train_seg(args: argparse.Namespace) -> int:
    from .train.segmentation.config import SegTrainConfig
    from .train.segmentation.fit import summary, train_segmentation

    values = _given(args, "cohort", "out", "model", "epochs", "loss", "lr", "l2", "lr_step", "lr_gamma",
                    "freeze_epochs", "patience", "batch_size", "patch_size", "mpp", "patches_per_slide",
                    "val_patches_per_slide", "encoder", "encoder_depth", "encoder_weights", "val_fold", "workers",
                    "gpus_per_worker", "storage", "name", "tracking_uri", "register_as", "seed", "cpus_per_worker",
                    "data_cpus", "start_timeout_s", "max_concurrent")
    if args.members:
        values["members"] = tuple(m.strip() for m in args.members.split(",") if m.strip())
    if args.mpps:
        values["mpps"] = tuple(float(m) for m in args.mpps.split(","))
    cfg = SegTrainConfig(**values, tiny=args.tiny, augment=not args.no_augment,
                         storage_options=parse_storage_options(args.storage_options))
    report = train_segmentation(cfg)
    for row in summary(report):
        print(f"member {row['member']} (validated on fold {row['val_fold']}): best epoch {row['epoch']}, "
              f"val_loss {row['val_loss']:.4f}, val_dice {row['val_dice']:.4f}; encoder weights "
              f"{row['encoder_weights']}")
    print(f"ensemble: {report.checkpoint}")
    print(f"model: {report.model_uri}")
    return 0


def _register_train_seg(sub: argparse._SubParsersAction) -> None:
    from .train.segmentation.config import LOSSES, SEG_MODELS, TINY_PATCH, recipe_defaults

    p = sub.add_parser("train-seg", help="train tumour segmentation members / an ensemble on annotated slides",
                       description="Patches streamed from slides + annotations (Ray Data), one Ray Train run per "
                       "member, ensemble members on different folds in parallel (Ray Tune), tracked and "
                       "registered in MLflow. Writes OUT/ensemble.pt.")
    p.add_argument("--cohort", required=True, help="cohort table with slide_id, uri, fold and `annotation`")
    p.add_argument("--out", required=True, help="output folder (checkpoints, ensemble.pt, MLflow store)")
    p.add_argument("--model", default="ensemble", help=" | ".join(SEG_MODELS))
    p.add_argument("--members", default=None, help="ensemble members, comma-separated (default: the paper's "
                   "unet-densenet121,unet-inceptionresnetv2,deeplabv3plus-xception), one fold each")
    p.add_argument("--epochs", type=int, default=None)
    # Unset recipe flags take each member's paper recipe (seg_config.SEG_RECIPES); given ones are recorded.
    p.add_argument("--loss", default=None, choices=LOSSES, help="hybrid: DigiPathAI's CE + Dice; bce: "
                   f"binary cross-entropy on the tumour channel (recipes: {recipe_defaults('loss')})")
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (recipes: {recipe_defaults('lr')})")
    p.add_argument("--l2", type=float, default=None, help="lambda of the L2 penalty on convolution kernels "
                   f"(recipes: {recipe_defaults('l2')})")
    p.add_argument("--lr-step", type=int, default=None, help="epochs between LR decays, 0: none (recipes: "
                   f"{recipe_defaults('lr_step')})")
    p.add_argument("--lr-gamma", type=float, default=None)
    p.add_argument("--freeze-epochs", type=int, default=None, help="epochs a pretrained encoder stays frozen; a "
                   f"randomly initialised one never is (recipes: {recipe_defaults('freeze_epochs')})")
    p.add_argument("--patience", type=int, default=None, help="early stopping patience on val loss (0: off)")
    p.add_argument("--batch-size", type=int, default=None, help=f"recipes: {recipe_defaults('batch_size')}")
    p.add_argument("--patch-size", type=int, default=None, help="training patch side in px (recipes: "
                   f"{recipe_defaults('patch_size')}; --tiny at most {TINY_PATCH})")
    p.add_argument("--mpp", type=float, default=None, help="patch resolution in µm/px (default 0.5)")
    p.add_argument("--mpps", default=None, help="MRN resolutions, comma-separated (default mpp x 1,2,4,8)")
    p.add_argument("--patches-per-slide", type=int, default=None, help="training patches per slide and epoch")
    p.add_argument("--val-patches-per-slide", type=int, default=None)
    p.add_argument("--encoder", default=None, help="encoder override for U-Net/DeepLab members (smp/timm name)")
    p.add_argument("--encoder-depth", type=int, default=None, help="encoder stages, 3..5")
    p.add_argument("--encoder-weights", default=None, help="ImageNet encoder weights: auto (default: the local "
                   "Hugging Face / torch-hub cache, never downloaded; else random init and a warning), random, FILE "
                   "(.safetensors/.pth state dict), or MEMBER=FILE,... per ensemble member")
    p.add_argument("--tiny", action="store_true", help="small members for CPU smoke runs and tests")
    p.add_argument("--no-augment", action="store_true", help="no flips/rotations/blur/colour jitter")
    p.add_argument("--val-fold", type=int, default=None, help="single member: fold held out (default lowest)")
    p.add_argument("--storage", default=None, help="Ray Train checkpoint storage (default OUT/checkpoints)")
    p.add_argument("--name", default=None, help="run name; the same name and storage resume a run")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite under --out)")
    p.add_argument("--register-as", default=None, help="MLflow registered model name")
    p.add_argument("--seed", type=int, default=None)
    _add_storage(p)
    _add_placement(p, train=True, concurrent=True)
    p.set_defaults(func=_train_seg)


def _segment(args: argparse.Namespace) -> int:
    from .io.manifest import exit_code, summarize
    from .segment import SegmentConfig, run_segment

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


def _register_segment(sub: argparse._SubParsersAction) -> None:
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
    _add_storage(p)
    _add_mpp_override(p)
    _add_placement(p, actors=True)
    p.set_defaults(func=_segment)


# -- pn-stage / burden (on segment's outputs) ---------------------------------------------------

def _pn_stage(args: argparse.Namespace) -> int:
    from .analysis.pn_stage import METASTASIS_TYPES, RFEnsembleConfig
    from .analysis.pn_stage_run import PnStageConfig, run_pn_stage

    config = PnStageConfig(features=args.features, cohort=args.cohort, out=args.out, folds=args.folds,
                           fit_cohort=args.fit_cohort, fit_features=args.fit_features,
                           ensemble=RFEnsembleConfig(seed=args.seed), tracking_uri=args.tracking_uri,
                           storage_options=parse_storage_options(args.storage_options))
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
    _print_outputs(report.tables, report.run_id, report.tracking_uri)
    return 0


def _register_pn_stage(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pn-stage", help="lymph-node metastasis types (RF ensemble) and patient pN-stages "
                       "(CAMELYON17) from segment's features.csv",
                       description="Types every lymph node (negative / itc / micro / macro) with the paper's "
                       "Random Forest ensemble (SMOTETomek-balanced) on the 32 heatmap features segment writes, "
                       "out-of-fold by patient (or fitted on --fit-cohort), stages each patient with CAMELYON17's "
                       "Table 3 rules, and scores nodes (accuracy, confusion) and stages (quadratic Cohen's kappa). "
                       "Writes nodes.csv, patients.csv, confusion.csv and one MLflow run.")
    p.add_argument("--features", required=True, help="features.csv written by `slidegrid segment`")
    p.add_argument("--cohort", required=True, help="CSV: slide_id, patient_id (or patient), and a node's "
                   "`metastasis` (negative|itc|micro|macro) and/or the patient's `pn_stage` "
                   "(pN0|pN0(i+)|pN1mi|pN1|pN2; a row with an empty slide_id may carry it alone)")
    p.add_argument("--out", default=None, help="output folder (default: pn-stage/ beside --features)")
    p.add_argument("--folds", type=int, default=5, help="out-of-fold typing: folds of whole patients (default 5)")
    p.add_argument("--fit-cohort", default=None, help="fit the forests on this cohort's nodes (it needs "
                   "`metastasis`) and type --cohort's nodes with them, instead of out-of-fold")
    p.add_argument("--fit-features", default=None, help="features.csv of the --fit-cohort slides (default --features)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds, node subsets, SMOTE and forests")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
                   "else SQLite under --out)")
    _add_storage(p)
    p.set_defaults(func=_pn_stage)


def _burden(args: argparse.Namespace) -> int:
    from .analysis.burden_run import BurdenConfig, run_burden
    from .analysis.tumour_burden import CleanupConfig

    config = BurdenConfig(segment_out=args.segment_out, out=args.out, cleanup=CleanupConfig(threshold=args.threshold),
                          tracking_uri=args.tracking_uri, mpp_override=args.mpp_override, reader=args.reader,
                          storage_options=parse_storage_options(args.storage_options))
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


def _register_burden(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("burden", help="viable tumour burden per slide (PAIP) from segment's heatmaps",
                       description="Per slide segmented ok: the heatmap binarised and cleaned (opening, small "
                       "objects and holes), the convex hull of the viable tumour intersected with the slide's "
                       "tissue mask as the whole tumour, burden = viable / whole area, areas in mm². Writes "
                       "burden.csv and one MLflow run. " + EXIT_CODES_HELP)
    p.add_argument("--segment-out", required=True, help="output folder of `slidegrid segment` (its --out)")
    p.add_argument("--out", default=None, help="output folder (default: --segment-out)")
    p.add_argument("--threshold", type=float, default=0.5, help="viable tumour probability (default 0.5)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
                   "else SQLite under --out)")
    _add_storage(p)
    _add_mpp_override(p)
    p.set_defaults(func=_burden)


# -- demo ---------------------------------------------------------------------------------------

def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=args.out, slides=args.slides, size=args.size, seed=args.seed, workers=args.workers,
                        epochs=args.epochs, texture_from=args.texture_from))
    return 0


def _register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole flow on generated slides: synth -> tissue -> encode -> train",
                       description="Synthesize a labelled archive, tissue masks, encode it with Ray Data, train "
                       "the attention classifier with Ray Train, evaluate held-out slides, log to MLflow.")
    p.add_argument("--out", default="slidegrid-demo", help="output folder (default ./slidegrid-demo)")
    p.add_argument("--slides", type=int, default=24)
    p.add_argument("--size", type=int, default=4096, help="slide width in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the attention paper's "
                   "recipe, 35 epochs of 38 optimizer steps at batch 64)")
    p.add_argument("--texture-from", default=None, metavar="PATCH_ROOT", help="tile the slides' tissue from the "
                   "real patches of a PatchCamelyon-style folder (train/ valid/ test/ -> training, validation and "
                   "test slides), read at 0.97 µm/px; default: the fast procedural slides")
    p.set_defaults(func=_demo)


# Each entry adds one subcommand; keep them in the order users meet them.
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _register_info,
    _register_synth,
    _register_tissue,
    _register_tiles,
    _register_encoders,
    _register_encode,
    _register_show,
    _register_probe,
    _register_train_encoder,
    _register_train,
    _register_tune,
    _register_predict,
    _register_train_seg,
    _register_segment,
    _register_pn_stage,
    _register_burden,
    _register_demo,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all subcommands)."""
    parser = argparse.ArgumentParser(prog="slidegrid", description="Whole-slide images to grids of tile "
                                     "embeddings, and models trained on them, on Ray.")
    parser.add_argument("--version", action="version", version=f"slidegrid {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `slidegrid` console script; exit code 2 with one `error:` line on failure."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # Ray's own logs go to a file beside the outputs; --debug keeps them on the terminal.
    ray_log = None if args.debug else ray_log_path(getattr(args, "out", None))
    try:
        with ray_logs_to(ray_log):
            return int(args.func(args) or 0)
    except SlidegridError as exc:
        if args.debug:
            raise
        print(f"error: {exc.input}: {exc.reason}", file=sys.stderr)
        return 2
    except OSError as exc:
        if args.debug:
            raise
        print(f"error: {exc.filename or args.command}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
