"""Benchmark: slidegrid's Ray encoding pipeline vs the decode limit and the usual DataLoader pipeline.

    python jobs/benchmarks/benchmark_encode.py [--slides 8] [--size 8192] [--cnn-slides 2] [--quick] [--read-only]

One run, one table: tiles/s and peak memory (the machine's used memory above its level before the row: driver,
Ray workers and object store, DataLoader workers; _measure.run_measured) for
  (a) physical limit — every compressed source tile the grid covers, decoded exactly once straight from its
                       bytes (tifffile tile offsets + imagecodecs' JPEG decoder, tifffile's arguments), one slide
                       per process on all cores (multiprocessing), no model, no copy into tiles: in grid tiles/s;
  (a') read stage    — `Slide.read_tiles` (what the encode read tasks call) over the same grid in chunks of 256
                       tiles, one slide per process on all cores;
  (a'') tiffslide    — the old bare tiffslide `read_region` loop, tile by tile (a baseline);
  (b) DataLoader     — torch DataLoader over one slide at a time, num_workers = cores, model in the main
                       process (how CLAM and Trident extract features);
  (c) slidegrid      — `run_encode` (Ray Data: plan -> read tasks -> encoder actors -> grid files);
each with mean-rgb and timm:resnet18 (random weights), plus slidegrid with 2x the slides (memory flatness).
Each measurement runs in a fresh subprocess so memory and caches do not leak between rows. The read rows leave
planning (tissue mask, grid) out; they also report CPU seconds per tile of their worker processes, i.e. tiles per
core-second, which does not move with other load on the machine (wall-clock rates do): the read stage's target is
>= 0.7x the physical limit per core. `--read-only` measures the read rows alone.

    python jobs/benchmarks/benchmark_encode.py --presets [NAME ...] [--target-s 40] [--rounds 2] [--quick]

Foundation-model presets on CPU (default: the ViT-S/B presets registered, Kaiko ViT-S/16, Lunit ViT-S/8,
H0-mini, Phikon; UNI if none is), random weights, one row each: the bare model's forward (the preset's module,
torch threads = cores, batches of --batch-size) on tiles of the archive decoded beforehand, against
`run_encode` on k slides of the same archive (k >= 3, chosen from the bare rate so that the run holds about
--target-s seconds of model time). Whole run: tiles / wall time (planning, actor start and model build
included); steady state: the tiles the encoder actor embedded after its first batch over the time from the end of
its first batch to the end of its last, the rate a long archive streams at (target >= 0.9x the bare forward, the model being the
bottleneck). CPU seconds per tile of both (the whole process tree for slidegrid) do not depend on what else
runs on the machine. Measurements of a preset run in interleaved rounds (bare, slidegrid), best of each kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from _measure import TreeCPU, run_measured

import _bootstrap  # noqa: F401
from slidegrid.encoders import EncoderSpec, build_encoder
from slidegrid.geometry.tiling import GridSpec, tile_grid
from slidegrid.geometry.tissue import TissueConfig, tissue_mask
from slidegrid.io.archive import list_archive
from slidegrid.io.slides import open_slide
from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide

CORES = os.cpu_count() or 1


def _plan(uris: list[str], spec: GridSpec) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The same tiles slidegrid would read: (uri, x, y) per slide."""
    out = []
    for uri in uris:
        with open_slide(uri) as s:
            g = tile_grid(s.info.dimensions, s.mpp_xy, spec, tissue_mask(s, TissueConfig()))
        out.append((uri, g.x, g.y))
    return out


# Tiles per `read_tiles` call in the read-stage row: the encode plan's chunk (encode.CHUNK_TILES).
READ_CHUNK = 256


def _covered(uri: str, x: np.ndarray, y: np.ndarray, spec: GridSpec) -> tuple[int, list[int]]:
    """The level a grid at `spec` reads and the indices of the source tiles its tiles reach (planning, untimed)."""
    with open_slide(uri) as s:
        level = s.plan_read(spec.tile_size, spec.tile_size, spec.mpp)[0]
        (w0, h0), (lw, lh) = s.info.level_dimensions[0], s.info.level_dimensions[level]
        sx, sy = spec.mpp / s.mpp_xy[0], spec.mpp / s.mpp_xy[1]
    import tifffile

    from slidegrid.io.readers.tiffslide_backend import pyramid_levels, slide_series

    with tifffile.TiffFile(uri) as tf:
        page = pyramid_levels(slide_series(tf, uri))[level]
        (th, tw), nx = page.chunks[:2], page.chunked[1]
    dx, dy = w0 / lw, h0 / lh
    t = spec.tile_size
    x0, x1 = np.clip(np.floor(x / dx), 0, lw), np.clip(np.ceil((x + t * sx) / dx), 0, lw)
    y0, y1 = np.clip(np.floor(y / dy), 0, lh), np.clip(np.ceil((y + t * sy) / dy), 0, lh)
    idx = {r * nx + c for a, b, c0, c1 in zip(y0.astype(int).tolist(), y1.astype(int).tolist(),
                                              x0.astype(int).tolist(), x1.astype(int).tolist()) if b > a and c1 > c0
           for r in range(a // th, (b - 1) // th + 1) for c in range(c0 // tw, (c1 - 1) // tw + 1)}
    return level, sorted(idx)


def _decode_slide(args: tuple[str, int, list[int], int]) -> tuple[int, float]:
    """Physical limit for one slide: read and decode each listed source tile of `level` once; (grid tiles, CPU s)."""
    import imagecodecs
    import tifffile
    from tifffile.tifffile import jpeg_decode_colorspace

    from slidegrid.io.readers.tiffslide_backend import pyramid_levels, slide_series

    uri, level, indices, n_grid = args
    c0 = time.process_time()
    with tifffile.TiffFile(uri) as tf:
        page = pyramid_levels(slide_series(tf, uri))[level]
        fh = tf.filehandle
        offsets = [page.dataoffsets[i] for i in indices]
        counts = [page.databytecounts[i] for i in indices]
        segments = fh.read_segments(offsets, counts, indices=indices, lock=fh.lock, sort=True)
        if page.compression == 7:  # JPEG: the codec call tifffile makes, without its wrapper
            cs, out_cs = jpeg_decode_colorspace(page.photometric, page.planarconfig, page.extrasamples, page.is_jfif)
            shape = page.chunks[:2]
            for data, _ in segments:
                if data:
                    imagecodecs.jpeg8_decode(data, tables=page.jpegtables, colorspace=cs, outcolorspace=out_cs,
                                             shape=shape)
        else:
            for data, i in segments:
                if data:
                    page.decode(data, i, jpegtables=page.jpegtables)
    return n_grid, time.process_time() - c0


def _read_tiles_slide(args: tuple[str, np.ndarray, np.ndarray, int, float]) -> tuple[int, float]:
    """Read stage for one slide: `Slide.read_tiles` chunk by chunk, the slide kept open; (tiles, CPU s)."""
    uri, xs, ys, t, mpp = args
    c0 = time.process_time()
    with open_slide(uri) as s:
        for i in range(0, len(xs), READ_CHUNK):
            s.read_tiles(xs[i:i + READ_CHUNK], ys[i:i + READ_CHUNK], t, mpp)
    return len(xs), time.process_time() - c0


def _read_chunk(args: tuple[str, list[int], list[int], int]) -> tuple[int, float]:
    import tiffslide

    uri, xs, ys, t = args
    c0 = time.process_time()
    ts = tiffslide.TiffSlide(uri)
    for x, y in zip(xs, ys):
        ts.read_region((x, y), 0, (t, t), as_array=True)
    return len(xs), time.process_time() - c0


def _pool_run(fn, jobs: list) -> tuple[int, float]:
    """Run `fn` over `jobs` on all cores; (tiles, CPU seconds of the workers)."""
    from multiprocessing import Pool

    with Pool(max(1, min(CORES, len(jobs)))) as pool:
        done = list(pool.imap_unordered(fn, jobs))
    return sum(n for n, _ in done), sum(c for _, c in done)


def run_physical_limit(plan, spec: GridSpec) -> tuple[int, float, float]:
    """(a) Every source tile the grid covers decoded once from its bytes, one slide per process."""
    jobs = [(u, *_covered(u, x, y, spec), len(x)) for u, x, y in plan]
    t0 = time.time()
    tiles, cpu = _pool_run(_decode_slide, jobs)
    return tiles, cpu, time.time() - t0


def run_read_stage(plan, spec: GridSpec) -> tuple[int, float, float]:
    """(a') `Slide.read_tiles` over the grid, one slide per process."""
    t0 = time.time()
    tiles, cpu = _pool_run(_read_tiles_slide, [(u, x, y, spec.tile_size, spec.mpp) for u, x, y in plan])
    return tiles, cpu, time.time() - t0


def run_region_loop(plan, spec: GridSpec) -> tuple[int, float, float]:
    """(a'') The old baseline: every tile read once with a bare tiffslide `read_region` loop on all cores (the
    slides' own mpp: tiffslide reads level pixels, no resampling)."""
    t, t0 = spec.tile_size, time.time()
    jobs = [(u, x[i:i + 256].tolist(), y[i:i + 256].tolist(), t) for u, x, y in plan for i in range(0, len(x), 256)]
    tiles, cpu = _pool_run(_read_chunk, jobs)
    return tiles, cpu, time.time() - t0


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


def run_bare(uris: list[str], spec: GridSpec, preset_name: str, batch: int, seconds: float
             ) -> tuple[int, float, float]:
    """The preset's module alone (as its encoder actor holds it: seeded random weights) on tiles of `uris`
    decoded and normalized beforehand, in batches, cycling over them for at least `seconds`."""
    import tiffslide
    import torch

    from slidegrid.encoders.preset import build_backbone, get_preset, preset_module

    torch.set_num_threads(CORES)
    preset = get_preset(preset_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = preset_module(preset, build_backbone(preset)).eval()
    t = spec.tile_size
    tiles = []
    for uri, xs, ys in _plan(uris, spec):
        ts = tiffslide.TiffSlide(uri)
        tiles += [ts.read_region((int(x), int(y)), 0, (t, t), as_array=True) for x, y in zip(xs, ys)]
    mean = torch.tensor(preset.mean).view(1, 3, 1, 1)
    std = torch.tensor(preset.std).view(1, 3, 1, 1)
    x = ((torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255 - mean) / std).contiguous()
    batches = [x[i:i + batch] for i in range(0, len(x), batch)]
    n, i = 0, 0
    with torch.inference_mode():
        module(batches[0])  # warm-up (allocator, oneDNN primitives)
        t0, c0 = time.time(), time.process_time()
        while i < 2 or time.time() - t0 < seconds:  # at least two batches
            b = batches[i % len(batches)]
            module(b)
            n, i = n + len(b), i + 1
        secs, cpu = time.time() - t0, time.process_time() - c0
    return n, secs, cpu


def run_slidegrid(archive: str, out: str, tile: int, encoder: str, batch: int) -> int:
    """(c) The library's pipeline, exactly as `slidegrid encode` runs it."""
    from slidegrid.encode import EncodeConfig, run_encode
    from slidegrid.encoders.preset import find_preset
    from slidegrid.runtime import init_ray

    init_ray()
    random = encoder.startswith("timm:") or find_preset(encoder) is not None
    cfg = EncodeConfig(input=archive, out=out, encoder=encoder, weights="random" if random else None,
                       batch_size=batch, mlflow=False, progress=False, overwrite=True,
                       grid=GridSpec(tile_size=tile))
    log = os.path.join(out, ".arrivals")
    _time_the_actors(log)
    t0 = time.time()  # Ray is up (a cluster is, in production); everything after it is timed
    with TreeCPU() as cpu:  # driver, raylet, GCS, Ray workers
        report = run_encode(cfg)
    _worker_seconds[0] = time.time() - t0
    _worker_cpu[0] = cpu.seconds
    with open(log) as f:
        calls = sorted((float(t), int(n)) for t, n in (ln.split() for ln in f))
    if len(calls) > 1:
        # Steady state: from the end of the actors' first batch to the end of their last (actor start, model
        # build, the first plan and the last grid writes left out), and the process tree's CPU in that window.
        (t_first, _), (t_last, _) = calls[0], calls[-1]
        _steady.update(steady_tiles=sum(n for _, n in calls[1:]), steady_s=t_last - t_first,
                       steady_cpu_s=cpu.at(t_last) - cpu.at(t_first))
    return report.tiles


def _time_the_actors(path: str) -> None:
    """Benchmark instrumentation: the encode stage's actor class, in this process, becomes one that appends
    "time tiles" to `path` after every batch it embeds (the class travels to the Ray workers by value)."""
    from slidegrid import encode

    class TimedEncodeActor(encode.EncodeActor):
        def __call__(self, batch):
            out = super().__call__(batch)
            with open(path, "a") as f:
                f.write(f"{time.time()} {len(out['embedding'])}\n")
            return out

    encode.EncodeActor = TimedEncodeActor


_worker_seconds = [0.0]
_worker_cpu: list[float | None] = [None]
_steady: dict[str, float] = {}


def _worker(args: argparse.Namespace) -> None:
    uris = [r.uri for r in list_archive(args.archive)][: args.n]
    spec = GridSpec(tile_size=args.tile_size).resolved()
    if args.method == "slidegrid":
        sub = tempfile.mkdtemp()
        for u in uris:  # a sub-archive of the first n slides, as links
            os.symlink(u, os.path.join(sub, os.path.basename(u)))
        tiles = run_slidegrid(sub, tempfile.mkdtemp(), args.tile_size, args.encoder, args.batch_size)
        secs = _worker_seconds[0]
    elif args.method in READ_ROWS:  # planning is left out, only reads are timed
        plan = _plan(uris, spec)
        tiles, _worker_cpu[0], secs = READ_ROWS[args.method](plan, spec)
    elif args.method == "bare":
        tiles, secs, _worker_cpu[0] = run_bare(uris, spec, args.encoder, args.batch_size, args.bare_s)
    else:
        t0 = time.time()
        tiles = run_dataloader(uris, spec, args.encoder, args.batch_size)
        secs = time.time() - t0
    print("RESULT " + json.dumps({"tiles": tiles, "seconds": secs, "cpu_s": _worker_cpu[0], **_steady}))


def measure(method: str, encoder: str, archive: str, n: int, args: argparse.Namespace) -> dict:
    """Run one row in a fresh subprocess, sampling the memory it holds (_measure.run_measured)."""
    cmd = [sys.executable, __file__, "--worker", method, "--encoder", encoder, "--archive", archive, "--n", str(n),
           "--tile-size", str(args.tile_size), "--batch-size", str(args.batch_size), "--bare-s", str(args.bare_s)]
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
    p.add_argument("--read-only", action="store_true", help="the read rows only (physical limit, read stage, "
                                                            "tiffslide baseline)")
    p.add_argument("--read-rounds", type=int, default=3, help="interleaved rounds of the read rows (best of)")
    p.add_argument("--presets", nargs="*", default=None, metavar="NAME",
                   help="benchmark foundation-model presets instead (default: the small ones registered)")
    p.add_argument("--preset-slides", type=int, default=16, help="slides in the --presets archive")
    p.add_argument("--preset-size", type=int, default=2048, help="slide side in pixels of the --presets archive")
    p.add_argument("--target-s", type=float, default=40.0, help="--presets: model seconds of the slidegrid run")
    p.add_argument("--bare-s", type=float, default=10.0, help="--presets: seconds the bare forward is timed")
    p.add_argument("--rounds", type=int, default=2, help="--presets: interleaved rounds per preset (best of)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--encoder", default="mean-rgb", help=argparse.SUPPRESS)
    p.add_argument("--archive", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.method = args.worker
        _worker(args)
        return
    if args.presets is not None:
        presets_main(args)
        return
    if args.quick:
        args.slides, args.size, args.cnn_slides, args.read_rounds = 2, 2048, 1, 1
    half = max(1, args.slides // 2)
    with tempfile.TemporaryDirectory() as d:
        print(f"writing {args.slides} synthetic slides of {args.size}x{args.size} px ...", flush=True)
        for i in range(args.slides):
            write_synthetic_slide(os.path.join(d, f"b{i:03d}.tiff"),
                                  SyntheticSpec(width=args.size, height=args.size, seed=i, n_tumours=i % 2))
        # The read rows in interleaved rounds, best of each (load from other jobs only ever slows a measurement down).
        reads: dict[str, list[dict]] = {m: [] for m in READ_ROWS}
        for rnd in range(args.read_rounds):
            for method in READ_ROWS:
                print(f"measuring {method} on {half} slides (round {rnd + 1}) ...", flush=True)
                reads[method].append(measure(method, "mean-rgb", d, half, args))
        rows = [(m, "-", half, _best(r)) for m, r in reads.items()]
        todo = [] if args.read_only else [
            ("dataloader", "mean-rgb", half), ("slidegrid", "mean-rgb", half), ("slidegrid", "mean-rgb", args.slides),
            ("dataloader", "timm:resnet18", args.cnn_slides), ("slidegrid", "timm:resnet18", args.cnn_slides)]
        for method, enc, n in todo:
            print(f"measuring {method} {enc} on {n} slides ...", flush=True)
            rows.append((method, enc, n, measure(method, enc, d, n, args)))
    print(f"\n{CORES} cores, tiles {args.tile_size}px at 0.5 mpp (the slides' own), synthetic {args.size}x{args.size} "
          "slides (256-px JPEG tiles)\n")
    print("| pipeline | encoder | slides | tiles | tiles/s | peak memory (GB) | vs physical limit |")
    print("|---|---|---|---|---|---|---|")
    limit = rows[0][3]["tiles_per_s"]
    for method, enc, n, r in rows:
        print(f"| {ROW_NAMES.get(method, method)} | {enc} | {n} | {r['tiles']} | {r['tiles_per_s']:.1f} | "
              f"{r['peak_gb']:.2f} | {r['tiles_per_s'] / limit:.2f}x |")
    if not args.read_only:
        # The 2x-slides row minus the 1x row: the fixed start (actors, first plan) cancels, what is left is the rate
        # a long archive streams at.
        (_, _, n1, r1), (_, _, n2, r2) = rows[4], rows[5]
        steady = (r2["tiles"] - r1["tiles"]) / (r2["seconds"] - r1["seconds"])
        print(f"| slidegrid, steady state ({n2} - {n1} slides) | mean-rgb | {n2 - n1} | {r2['tiles'] - r1['tiles']} | "
              f"{steady:.1f} | - | {steady / limit:.2f}x |")
    print("\n| read path | slides | tiles | wall s | tiles/s, all cores | CPU ms per tile | tiles per core-second | "
          "vs physical limit, per core |")
    print("|---|---|---|---|---|---|---|---|")
    per_core = rows[0][3]["tiles"] / rows[0][3]["cpu_s"]
    for method, _, n, r in rows[:3]:
        rate = r["tiles"] / r["cpu_s"]
        print(f"| {ROW_NAMES[method]} | {n} | {r['tiles']} | {r['seconds']:.2f} | {r['tiles_per_s']:.1f} ({r['range']}) | "
              f"{1000 * r['cpu_s'] / r['tiles']:.3f} | {rate:.1f} | {rate / per_core:.2f}x |")
    print(f"\nRead rows: best of {args.read_rounds} interleaved round(s) (all rounds' tiles/s in brackets); planning "
          "left out. Per core: grid tiles per CPU-second of the worker processes (user + system), which moves less "
          "with other load on the machine than wall time; target for the read stage >= 0.7x the physical limit.")


def _best(runs: list[dict]) -> dict:
    """One read row from its rounds: the highest rate, the least CPU, the highest memory peak."""
    rates = [r["tiles_per_s"] for r in runs]
    best = max(runs, key=lambda r: r["tiles_per_s"])
    return {**best, "cpu_s": min(r["cpu_s"] for r in runs), "peak_gb": max(r["peak_gb"] for r in runs),
            "range": f"{min(rates):.0f}-{max(rates):.0f}"}


ROW_NAMES = {"physical": "(a) physical limit: each covered JPEG tile decoded once, all cores",
             "read_tiles": "(a') read stage: Slide.read_tiles, all cores",
             "read_region": "(a'') baseline: bare tiffslide read_region loop, all cores",
             "dataloader": "(b) DataLoader", "slidegrid": "(c) slidegrid"}
READ_ROWS = {"physical": run_physical_limit, "read_tiles": run_read_stage, "read_region": run_region_loop}


# ViT-S/B presets (issue 12's CPU rows), in this order where registered.
SMALL_PRESETS = ("kaiko-vits16", "lunit-vits8", "h0-mini", "phikon")


def presets_main(args: argparse.Namespace) -> None:
    """One row per preset: the bare forward against `run_encode` on k and 2k slides (module docstring)."""
    from slidegrid.encoders.preset import find_preset

    names = args.presets or [n for n in SMALL_PRESETS if find_preset(n)] or ["uni"]
    if args.quick:
        names, args.preset_slides, args.target_s, args.bare_s, args.rounds = names[:1], 3, 0.0, 2.0, 1
    presets = [find_preset(n) for n in names]
    if None in presets:
        raise SystemExit(f"unknown preset(s): {', '.join(n for n, p in zip(names, presets) if p is None)}")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        print(f"writing {args.preset_slides} synthetic slides of {args.preset_size}x{args.preset_size} px ...",
              flush=True)
        for i in range(args.preset_slides):
            write_synthetic_slide(os.path.join(d, f"p{i:03d}.tiff"), SyntheticSpec(
                width=args.preset_size, height=args.preset_size, seed=i, n_tumours=i % 2))
        uris = [r.uri for r in list_archive(d)]
        per_slide = [len(x) for _, x, _ in _plan(uris, GridSpec(tile_size=args.tile_size).resolved())]
        for p in presets:
            # Interleaved rounds (bare, then slidegrid), best of each: load from other jobs on a shared machine
            # only ever slows a measurement down.
            bares, runs, k = [], [], 0
            for rnd in range(args.rounds):
                print(f"measuring {p.name}: round {rnd + 1}, bare forward ...", flush=True)
                bares.append(measure("bare", p.name, d, min(2, len(uris)), args))
                if not k:  # slides for about target_s seconds of model time at the bare rate, at least 3
                    tiles = 0
                    while k < len(uris) and (k < min(3, len(uris)) or tiles < bares[0]["tiles_per_s"] * args.target_s):
                        tiles += per_slide[k]
                        k += 1
                print(f"measuring {p.name}: round {rnd + 1}, slidegrid on {k} slides ...", flush=True)
                runs.append(measure("slidegrid", p.name, d, k, args))
            rates = [b["tiles_per_s"] for b in bares]
            bare = {"tiles_per_s": max(rates), "range": f"{min(rates):.1f}-{max(rates):.1f}",
                    "cpu_per_tile": min(b["cpu_s"] / b["tiles"] for b in bares)}
            run = min(runs, key=lambda r: r["seconds"])
            steady = max(r["steady_tiles"] / r["steady_s"] for r in runs)
            cpu = min(r["steady_cpu_s"] / r["steady_tiles"] for r in runs)
            rows.append((p, k, bare, run, steady, cpu))
    print(f"\n{CORES} cores (CPU), tiles {args.tile_size}px at 0.5 mpp, synthetic {args.preset_size}x{args.preset_size}"
          f" slides, batch {args.batch_size}, random weights, best of {args.rounds} interleaved round(s)\n")
    print("| preset | architecture | params (M) | slides / tiles | bare forward tiles/s | slidegrid tiles/s, whole "
          "run | slidegrid tiles/s, steady state | steady / bare | CPU ms per tile, bare / slidegrid steady | "
          "CPU per tile, bare / slidegrid |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p, k, bare, run, steady, cpu in rows:
        print(f"| {p.name} | {p.arch} | {p.params_m:g} | {k} / {run['tiles']} | {bare['tiles_per_s']:.1f} "
              f"({bare['range']}) | {run['tiles_per_s']:.1f} | {steady:.1f} | {steady / bare['tiles_per_s']:.2f}x | "
              f"{bare['cpu_per_tile'] * 1000:.0f} / {cpu * 1000:.0f} | {bare['cpu_per_tile'] / cpu:.2f}x |")
    print("\nbare forward: the best round (all rounds' range in brackets). Whole run: tiles / wall time of "
          "`run_encode` from a running Ray (planning, actor start and model build included). Steady state: tiles "
          "the encoder actor embedded after its first batch / time from the end of its first batch to the end of its "
          "last (actor start, model build, the first plan and the last grid writes left out). "
          "CPU per tile: user + system seconds of the bare loop's process, and of the whole slidegrid process tree "
          "(driver, raylet, GCS, Ray workers: decode, model, grid writing) in the steady-state window, per tile: "
          "what a tile costs whatever else runs on the machine (wall-time rates move with a shared machine's load).")


if __name__ == "__main__":
    main()
