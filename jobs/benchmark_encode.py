"""Benchmark: slidegrid's Ray encoding pipeline vs the decode limit and the usual DataLoader pipeline.

    python jobs/benchmark_encode.py [--slides 8] [--size 8192] [--cnn-slides 2] [--quick]

One run, one table: tiles/s and peak memory (PSS of the whole process tree: driver, Ray workers, DataLoader
workers) for
  (a) decode limit  — bare tiffslide reads of the same tiles on all cores (multiprocessing), no model;
  (b) DataLoader    — torch DataLoader over one slide at a time, num_workers = cores, model in the main
                      process (how CLAM and Trident extract features);
  (c) slidegrid     — `run_encode` (Ray Data: plan -> read tasks -> encoder actors -> grid files);
each with mean-rgb and timm:resnet18 (random weights), plus slidegrid with 2x the slides (memory flatness).
Each measurement runs in a fresh subprocess so memory and caches do not leak between rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

import _bootstrap  # noqa: F401
from _measure import run_measured
from slidegrid.archive import list_archive
from slidegrid.encoders import EncoderSpec, build_encoder
from slidegrid.slides import open_slide
from slidegrid.synthetic import SyntheticSpec, write_synthetic_slide
from slidegrid.tiling import GridSpec, tile_grid
from slidegrid.tissue import TissueConfig, tissue_mask

CORES = os.cpu_count() or 1


def _plan(uris: list[str], spec: GridSpec) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The same tiles slidegrid would read: (uri, x, y) per slide."""
    out = []
    for uri in uris:
        with open_slide(uri) as s:
            g = tile_grid(s.info.dimensions, s.mpp_xy, spec, tissue_mask(s, TissueConfig()))
        out.append((uri, g.x, g.y))
    return out


def _read_chunk(args: tuple[str, list[int], list[int], int]) -> int:
    import tiffslide

    uri, xs, ys, t = args
    ts = tiffslide.TiffSlide(uri)
    for x, y in zip(xs, ys):
        ts.read_region((x, y), 0, (t, t), as_array=True)
    return len(xs)


def run_decode_limit(plan, tile: int) -> int:
    """(a) Every tile read once with a bare tiffslide loop on all cores."""
    from multiprocessing import Pool

    jobs = [(u, x[i:i + 256].tolist(), y[i:i + 256].tolist(), tile) for u, x, y in plan for i in range(0, len(x), 256)]
    with Pool(CORES) as pool:
        return sum(pool.imap_unordered(_read_chunk, jobs))


class _TileDataset:
    """Map-style dataset of one slide's tiles (CLAM's Whole_Slide_Bag_FP pattern)."""

    def __init__(self, uri: str, xs: np.ndarray, ys: np.ndarray, tile: int) -> None:
        self.uri, self.xs, self.ys, self.tile, self.ts = uri, xs, ys, tile, None

    def __len__(self) -> int:
        return len(self.xs)

    def __getitem__(self, i: int) -> np.ndarray:
        import tiffslide

        if self.ts is None:
            self.ts = tiffslide.TiffSlide(self.uri)
        return self.ts.read_region((int(self.xs[i]), int(self.ys[i])), 0, (self.tile, self.tile), as_array=True)


def run_dataloader(uris: list[str], spec: GridSpec, encoder: str, batch: int) -> int:
    """(b) Per slide, as CLAM and Trident do: tissue mask + tile grid, then a DataLoader with workers = cores
    and the encoder in the main process. Timed end to end (model build and planning included), as (c) is."""
    import torch
    from torch.utils.data import DataLoader

    enc = build_encoder(EncoderSpec(encoder, "random" if encoder.startswith("timm:") else None))
    if encoder.startswith("timm:"):
        torch.set_num_threads(CORES)
    n = 0
    for uri, x, y in (_plan([u], spec)[0] for u in uris):
        loader = DataLoader(_TileDataset(uri, x, y, spec.tile_size), batch_size=batch, num_workers=CORES,
                            collate_fn=lambda b: np.stack(b))
        for imgs in loader:
            enc.encode(imgs)
            n += len(imgs)
    return n


def run_slidegrid(archive: str, out: str, tile: int, encoder: str, batch: int) -> int:
    """(c) The library's pipeline, exactly as `slidegrid encode` runs it."""
    from slidegrid.encode import EncodeConfig, run_encode
    from slidegrid.runtime import init_ray

    init_ray()
    cfg = EncodeConfig(input=archive, out=out, encoder=encoder,
                       weights="random" if encoder.startswith("timm:") else None, tile_size=tile,
                       batch_size=batch, mlflow=False, progress=False, overwrite=True)
    t0 = time.time()  # Ray is up (a cluster is, in production); everything after it is timed
    report = run_encode(cfg)
    _worker_seconds[0] = time.time() - t0
    return report.tiles


_worker_seconds = [0.0]


def _worker(args: argparse.Namespace) -> None:
    uris = [r.uri for r in list_archive(args.archive)][: args.n]
    spec = GridSpec(tile_size=args.tile_size)
    if args.method == "slidegrid":
        sub = tempfile.mkdtemp()
        for u in uris:  # a sub-archive of the first n slides, as links
            os.symlink(u, os.path.join(sub, os.path.basename(u)))
        tiles = run_slidegrid(sub, tempfile.mkdtemp(), args.tile_size, args.encoder, args.batch_size)
        secs = _worker_seconds[0]
    elif args.method == "decode":  # the limit: planning is left out, only reads are timed
        plan = _plan(uris, spec)
        t0 = time.time()
        tiles = run_decode_limit(plan, args.tile_size)
        secs = time.time() - t0
    else:
        t0 = time.time()
        tiles = run_dataloader(uris, spec, args.encoder, args.batch_size)
        secs = time.time() - t0
    print("RESULT " + json.dumps({"tiles": tiles, "seconds": secs}))


def measure(method: str, encoder: str, archive: str, n: int, args: argparse.Namespace) -> dict:
    """Run one row in a fresh subprocess, sampling the PSS of its whole process tree."""
    cmd = [sys.executable, __file__, "--worker", method, "--encoder", encoder, "--archive", archive, "--n", str(n),
           "--tile-size", str(args.tile_size), "--batch-size", str(args.batch_size)]
    m = run_measured(cmd)
    if m.returncode or m.result is None:
        raise SystemExit(f"benchmark row {method}/{encoder} failed (exit {m.returncode}):\n{m.output[-2000:]}")
    res = m.result
    return {**res, "tiles_per_s": res["tiles"] / res["seconds"], "peak_gb": m.peak_bytes / 1e9}


def main() -> None:
    """Parse arguments, build the archive, measure every row, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slides", type=int, default=8, help="slides in the archive (slidegrid 2x row uses all)")
    p.add_argument("--size", type=int, default=8192, help="slide side in pixels (0.5 mpp)")
    p.add_argument("--cnn-slides", type=int, default=1, help="slides used for the resnet18 rows")
    p.add_argument("--tile-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--encoder", default="mean-rgb", help=argparse.SUPPRESS)
    p.add_argument("--archive", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.method = args.worker
        _worker(args)
        return
    if args.quick:
        args.slides, args.size, args.cnn_slides = 2, 2048, 1
    half = max(1, args.slides // 2)
    with tempfile.TemporaryDirectory() as d:
        print(f"writing {args.slides} synthetic slides of {args.size}x{args.size} px ...", flush=True)
        for i in range(args.slides):
            write_synthetic_slide(os.path.join(d, f"b{i:03d}.tiff"),
                                  SyntheticSpec(width=args.size, height=args.size, seed=i, n_tumours=i % 2))
        rows = []
        for method, enc, n in [("decode", "-", half), ("dataloader", "mean-rgb", half),
                               ("slidegrid", "mean-rgb", half), ("slidegrid", "mean-rgb", args.slides),
                               ("dataloader", "timm:resnet18", args.cnn_slides),
                               ("slidegrid", "timm:resnet18", args.cnn_slides)]:
            print(f"measuring {method} {enc} on {n} slides ...", flush=True)
            rows.append((method, enc, n, measure(method, enc if enc != "-" else "mean-rgb", d, n, args)))
    print(f"\n{CORES} cores, tiles {args.tile_size}px at 0.5 mpp, synthetic {args.size}x{args.size} slides\n")
    print("| pipeline | encoder | slides | tiles | tiles/s | peak memory (GB) | vs decode limit |")
    print("|---|---|---|---|---|---|---|")
    limit = rows[0][3]["tiles_per_s"]
    for method, enc, n, r in rows:
        print(f"| {method} | {enc} | {n} | {r['tiles']} | {r['tiles_per_s']:.1f} | {r['peak_gb']:.2f} | "
              f"{r['tiles_per_s'] / limit:.2f}x |")
    # The 2x-slides row minus the 1x row: the fixed start (actors, first plan) cancels, what is left is the rate
    # a long archive streams at.
    (_, _, n1, r1), (_, _, n2, r2) = rows[2], rows[3]
    steady = (r2["tiles"] - r1["tiles"]) / (r2["seconds"] - r1["seconds"])
    print(f"| slidegrid, steady state ({n2} - {n1} slides) | mean-rgb | {n2 - n1} | {r2['tiles'] - r1['tiles']} | "
          f"{steady:.1f} | - | {steady / limit:.2f}x |")


if __name__ == "__main__":
    main()
