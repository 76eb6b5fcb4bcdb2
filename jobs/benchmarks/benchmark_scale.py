"""Benchmark: how far one encode driver scales — its CPU per tile, scale-out over nodes, its memory.

    python jobs/benchmarks/benchmark_scale.py [--parts a b c] [--quick] [--tiles 100000] [--slide-tiles 10000]
                                   [--slides 6] [--size 6144] [--mem-slides 12 48] [--mem-size 2048]

One run, one table (markdown), in three parts; every measurement runs in a fresh subprocess:
  (a) driver cost — CPU seconds of the driver process (time.process_time: all its threads) per 100,000 tiles at
      code size C = 512 and C = 1536, and the ceiling it implies: the tiles/s one driver can coordinate
      (100,000 / those seconds). Synthetic batches, no encoder, no slide reads: slides of --slide-tiles tiles,
      in order, cut into batches of 512 rows (the GPU batch), each handed over as Ray Data's iter_batches
      delivers it (an Arrow block turned into numpy; that conversion is timed apart and shown in its own column).
        before — commit 1a76780's driver itself: its `platform/` is extracted with `git archive` into a temporary
                 folder and imported from there (PYTHONPATH) in the subprocess, and its `encode._stream` runs with
                 a stand-in for Ray Data that yields the encoder stage's batches (slide_id, status, error, n_tiles,
                 meta — JSON on the row of tile 0 —, index, row, col, x, y, tissue, float16 embedding (512, C)):
                 every batch goes through its loop, `_SlideBuffer.add`, and `_finish` writes each grid (Parquet,
                 zstd) and its manifest row (a real ManifestWriter in a temporary folder). Only placement (a fixed
                 2-CPU shape) and the watchdog (a thread that polls Ray every 5 s) are stubbed.
        after  — today's `stream.pipeline.Coordinator` (receive + poll per batch, then drain, as `run_stream`
                 does) fed the records `write_parts` returns for the same batches (one per batch and slide: slide
                 id, outcome, part name, int32 tile indices), with a real local Ray, a real commit task per slide
                 that returns {"tiles": n} at once (so launching and awaiting commit tasks is counted) and a real
                 ManifestWriter. The parts themselves are written before the clock starts (the actors' work). One
                 pass takes tens of milliseconds: the median of 5 passes (fresh Coordinator and manifest each).
      Target: after's ceiling >= 20x before's at C = 1536.
  (b) scale-out — `run_encode` (mean-rgb) of one synthetic archive (--slides slides of --size px) on a
      `ray.cluster_utils.Cluster`: a head with 0 CPUs and 1, 2, 3 worker nodes of os.cpu_count() CPUs each; tiles/s
      (the stream's own seconds, Ray already up), tiles/s per logical CPU, and whether every grid is identical
      across node counts. On one machine the nodes share its cores: more nodes are more task slots, not more
      cores, so this shows that the stream spreads over nodes and what that costs, not a speed-up.
  (c) driver memory — peak RSS of the driver process alone (not the raylet or the Ray workers: its own pid,
      sampled every 20 ms in a thread, and ru_maxrss where it rose during the run) during `run_encode` (mean-rgb)
      of 12 and of 48 small slides (--mem-size px), each in a fresh process with its own local Ray, next to its
      RSS just before (Ray up, modules imported) and its lifetime peak; the ratio should stay close to 1.

`--quick` runs tiny sizes ((a) 20,000 tiles, (b) 2 slides of 2048 px, (c) 6 and 24 slides of 1024 px): about
3 minutes on 2 lightly loaded cores (6 under heavy load); the defaults about 5 (8 under heavy load). `--parts a`
alone writes no slides (about 30 s); it needs the git history (commit 1a76780).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from _measure import run_measured

import _bootstrap  # noqa: F401

CORES = os.cpu_count() or 1
ROOT = Path(__file__).resolve().parents[2]
BEFORE_COMMIT = "1a76780"  # the last commit whose driver received every embedding and wrote every grid
BATCH = 512  # rows per encoder batch (AUTO_BATCH["cuda"]), i.e. per batch the driver received before
CODE_SIZES = (512, 1536)
PER = 100_000  # tiles the driver cost is expressed per
AFTER_ROUNDS = 5  # (a) after: rounds over the same records (one round is tens of milliseconds), median reported


# -- synthetic stream (numpy only: runs against either tree) -----------------------------------------

def _meta(sid: str, n: int, side: int) -> str:
    """A slide's metadata JSON as `plan_slide` puts it on the row of tile 0."""
    return json.dumps({
        "slide_id": sid, "source_uri": f"/archive/{sid}.tiff", "plan_started": time.time(), "slide_mpp": 0.25,
        "slide_mpp_x": 0.25, "slide_mpp_y": 0.25, "target_mpp": 0.5, "tile_size": 224, "stride": 224,
        "min_tissue": 0.25, "grid_shape": [side, side], "slide_dimensions": [side * 448, side * 448],
        "encoder": "synthetic", "weights_digest": "synthetic", "settings_hash": "synthetic", "dtype": "float16",
        "reader": "tiffslide", "mpp_source": "tiff", "tissue_mpp": 8.0, "tissue_fraction": 0.5,
        "ink_fraction": 0.0, "slidegrid_version": "0.1.0", "plan_seconds": 1.0, "n_tiles_planned": n})


def tile_batches(slides: int, slide_tiles: int, code_size: int, prefix: str = "s", seed: int = 0):
    """The encoder stage's output: `slides` slides of `slide_tiles` tiles, in order, in batches of BATCH rows."""
    rng = np.random.default_rng(seed)
    side = math.ceil(math.sqrt(slide_tiles))
    total = slides * slide_tiles
    for start in range(0, total, BATCH):
        g = np.arange(start, min(start + BATCH, total))
        s, i = g // slide_tiles, (g % slide_tiles).astype(np.int64)
        sid = np.array([f"{prefix}{k:05d}" for k in s])
        meta = np.array([_meta(str(sid[j]), slide_tiles, side) if i[j] == 0 else "" for j in range(len(g))])
        row, col = i // side, i % side
        yield {"slide_id": sid, "status": np.full(len(g), "ok"), "error": np.full(len(g), ""),
               "n_tiles": np.full(len(g), slide_tiles, np.int64), "meta": meta, "index": i, "row": row, "col": col,
               "x": col * 448, "y": row * 448, "tissue": np.full(len(g), 0.9, np.float32),
               "embedding": rng.standard_normal((len(g), code_size), dtype=np.float32).astype(np.float16)}


def delivered(batches) -> tuple[list[dict[str, np.ndarray]], float]:
    """The batches as the driver's iter_batches(batch_format="numpy") hands them: each turned into a block on the
    worker side (untimed), then back into numpy on the driver side (CPU seconds returned)."""
    from ray.data.block import BlockAccessor

    out, cpu = [], 0.0
    for b in batches:
        block = BlockAccessor.batch_to_block(b)
        t0 = time.process_time()
        out.append(BlockAccessor.for_block(block).to_batch_format("numpy"))
        cpu += time.process_time() - t0
    return out, cpu


# -- (a) before: commit 1a76780's driver ---------------------------------------------------------------

class _FakeDataset:
    """What 1a76780's `_stream` sees of Ray Data: a chain of stages that yields the given batches."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches = batches

    def flat_map(self, *a, **k) -> _FakeDataset:
        return self

    map_batches = flat_map

    def iter_batches(self, batch_size=None, batch_format="numpy"):
        yield from self.batches


class _NoWatchdog:
    def __init__(self, *a, **k) -> None:
        pass

    def __enter__(self) -> _NoWatchdog:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def tick(self) -> None:
        pass


def _child_before(spec: dict) -> dict:
    # Commit 1a76780's module paths (before the io/ package), on purpose.
    from slidegrid.archive import SlideRecord
    from slidegrid.manifest import ManifestWriter

    from slidegrid import encode as enc
    from slidegrid.placement import ClusterShape

    tree = Path(spec["tree"]).resolve()
    if not Path(enc.__file__).resolve().is_relative_to(tree):
        raise SystemExit(f"slidegrid.encode came from {enc.__file__}, not from {tree}")
    enc.ClusterShape = SimpleNamespace(current=lambda: ClusterShape(2.0, 0.0, 2.0))
    enc.Watchdog = _NoWatchdog

    def run(slides: int, code_size: int, prefix: str) -> tuple[float, float, int, int]:
        out = tempfile.mkdtemp(dir=spec["out"])
        batches, conv = delivered(tile_batches(slides, spec["slide_tiles"], code_size, prefix))
        config = enc.EncodeConfig(input=out, out=out, mlflow=False, progress=False, dtype="float16")
        writer = ManifestWriter(out)
        todo = [SlideRecord(f"{prefix}{k:05d}", f"/archive/{prefix}{k:05d}.tiff") for k in range(slides)]
        data = SimpleNamespace(DataContext=SimpleNamespace(get_current=lambda: SimpleNamespace(
            enable_progress_bars=False, execution_options=SimpleNamespace(preserve_order=False))),
            from_items=lambda *a, **k: _FakeDataset(batches), ActorPoolStrategy=lambda **k: None)
        t0 = time.process_time()
        tiles = enc._stream(config, todo, code_size, "synthetic", False, "synthetic", writer,
                            SimpleNamespace(data=data), None)
        cpu = time.process_time() - t0
        grids = len([f for f in os.listdir(out) if f.endswith(".parquet") and not f.startswith("_")])
        shutil.rmtree(out)
        return cpu, conv, tiles, grids

    run(1, 8, "warm")  # first-call costs (Parquet writer, zstd) out of the measurement
    rows = {}
    for c in spec["code_sizes"]:
        cpu, conv, tiles, grids = run(spec["slides"], c, "s")
        rows[str(c)] = {"cpu_s": cpu, "convert_s": conv, "tiles": tiles, "grids": grids, "batches":
                        math.ceil(spec["slides"] * spec["slide_tiles"] / BATCH)}
    return rows


# -- (a) after: today's Coordinator -------------------------------------------------------------------

def _null_commit(commit, out, slide_id, meta, parts, n_tiles, storage_options) -> dict:
    """A commit task that merges and writes nothing: what is left is launching and awaiting it."""
    return {"tiles": int(n_tiles)}


def _child_after(spec: dict) -> dict:
    import ray
    from tqdm import tqdm

    from slidegrid.encode import EncodeConfig, _stream_spec
    from slidegrid.io.manifest import ManifestWriter
    from slidegrid.stream.pipeline import Coordinator, write_parts

    ray.init(address="local", num_cpus=CORES, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    task = ray.remote(_null_commit).options(num_cpus=0.25)
    ray.get(task.remote(None, "", "warm-up", {}, [], 0, {}))  # a worker up before the clock starts

    def run(slides: int, code_size: int, prefix: str, rounds: int) -> tuple[list[float], float, int, int, int]:
        out = tempfile.mkdtemp(dir=spec["out"])
        config = EncodeConfig(input=out, out=out, mlflow=False, progress=False, dtype="float16")
        sspec = _stream_spec(config, code_size, "synthetic", False, "synthetic", None)
        # What the SinkActors return for these batches (their parts written now, before the clock starts).
        records = (write_parts(b, out, sspec.payload, {})
                   for b in tile_batches(slides, spec["slide_tiles"], code_size, prefix))
        batches, conv = delivered(records)
        uris = {f"{prefix}{k:05d}": f"/archive/{prefix}{k:05d}.tiff" for k in range(slides)}
        cpus, tiles, ok = [], 0, 0
        # Tens of milliseconds per round: several rounds over the same records (a fresh Coordinator and manifest
        # each time), the median reported.
        for k in range(rounds):
            writer = ManifestWriter(tempfile.mkdtemp(dir=out, prefix=f"round{k}-"))
            coord = Coordinator(sspec, uris, writer, task, tqdm(total=slides, disable=True))
            t0 = time.process_time()
            for b in batches:
                coord.receive(b)
                coord.poll()
            coord.drain()
            writer.flush()
            cpus.append(time.process_time() - t0)
            tiles, ok = coord.tiles, sum(r.status == "ok" for r in writer.results())
        shutil.rmtree(out)
        return cpus, conv, tiles, ok, len(batches)

    run(1, 8, "warm", 1)
    rows = {}
    for c in spec["code_sizes"]:
        cpus, conv, tiles, ok, n = run(spec["slides"], c, "s", spec["rounds"])
        rows[str(c)] = {"cpu_s": float(np.median(cpus)), "cpu_rounds": cpus, "convert_s": conv, "tiles": tiles,
                        "grids": ok, "batches": n}
    ray.shutdown()
    return rows


def _extract_before(dest: str) -> str:
    """Commit 1a76780's `platform/` under `dest` (git archive: no worktree, nothing left in the repository)."""
    proc = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE_COMMIT, "platform"], capture_output=True)
    if proc.returncode:
        raise SystemExit(f"part (a) needs the git history of {ROOT} (commit {BEFORE_COMMIT}): "
                         f"{proc.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return os.path.join(dest, "platform")


def part_a(args: argparse.Namespace, work: str) -> list[list[str]]:
    slides = max(1, args.tiles // args.slide_tiles)
    spec = {"slides": slides, "slide_tiles": args.slide_tiles, "code_sizes": list(CODE_SIZES)}
    old = tempfile.mkdtemp(prefix=f"slidegrid-{BEFORE_COMMIT}-")
    try:
        tree = _extract_before(old)
        print(f"(a) before: commit {BEFORE_COMMIT}'s driver on {slides} x {args.slide_tiles} tiles ...", flush=True)
        before = _run_child("before", {**spec, "tree": tree, "out": work}, env={"PYTHONPATH": tree})
    finally:
        shutil.rmtree(old, ignore_errors=True)
    print("(a) after: Coordinator + commit tasks on the same tiles ...", flush=True)
    after = _run_child("after", {**spec, "out": work, "rounds": AFTER_ROUNDS})
    rows = []
    note = (f"synthetic batches of {BATCH} rows, slides of {args.slide_tiles:,} tiles; no encoder, no reads; "
            "CPU s of the driver process, I/O waits not counted")
    names = {"before": f"before ({BEFORE_COMMIT}: driver assembles every slide, writes every grid)",
             "after": "after (Coordinator: records in, a commit task per slide out)"}
    ceilings = {}
    for kind, res in (("before", before), ("after", after)):
        for c in CODE_SIZES:
            r = res[str(c)]
            if r["tiles"] != slides * args.slide_tiles or r["grids"] != slides:
                raise SystemExit(f"(a) {kind} C={c}: {r['tiles']} tiles, {r['grids']} slides done, expected "
                                 f"{slides * args.slide_tiles} and {slides}")
            per = r["cpu_s"] * PER / r["tiles"]
            conv = r["convert_s"] * PER / r["tiles"]
            ceilings[kind, c] = PER / per
            spread = ""
            if "cpu_rounds" in r:
                lo, hi = (x * PER / r["tiles"] for x in (min(r["cpu_rounds"]), max(r["cpu_rounds"])))
                spread = f"; median of {len(r['cpu_rounds'])} rounds, {lo:.3f}–{hi:.3f}"
            rows.append([f"(a) driver cost — {kind}", names[kind], f"C = {c}", f"{r['tiles']:,}",
                         f"{per:.3f} CPU s / 100k tiles ({r['batches']} batches{spread})",
                         f"ceiling {PER / per:,.0f} tiles/s; with Arrow→numpy of the batches (+{conv:.3f} s) "
                         f"{PER / (per + conv):,.0f} tiles/s", note])
    for c in CODE_SIZES:
        ratio = ceilings["after", c] / ceilings["before", c]
        target = " (target ≥ 20×)" if c == 1536 else ""
        rows.append(["(a) driver cost — ratio", "after ceiling / before ceiling", f"C = {c}", "",
                     f"{ratio:,.1f}×{target}", ("target met" if ratio >= 20 else "target NOT met") if target else "",
                     "same tiles"])
    return rows


# -- (b) scale-out over nodes ------------------------------------------------------------------------

def _child_cluster(spec: dict) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from slidegrid.encode import EncodeConfig, run_encode

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(spec["nodes"]):
            cluster.add_node(num_cpus=CORES)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
        report = run_encode(EncodeConfig(input=spec["archive"], out=spec["out"], mlflow=False, progress=False))
        return {"tiles": report.tiles, "seconds": report.seconds,
                "ok": sum(r.status == "ok" for r in report.results), "slides": len(report.results),
                "nodes": len([n for n in ray.nodes() if n["Alive"]]),
                "cpus": float(ray.cluster_resources().get("CPU", 0))}
    finally:
        ray.shutdown()
        cluster.shutdown()


def _write_archive(folder: str, n: int, size: int) -> None:
    from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide

    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        write_synthetic_slide(os.path.join(folder, f"m{i:03d}.tiff"),
                              SyntheticSpec(width=size, height=size, seed=i, n_tumours=i % 2))


def part_b(args: argparse.Namespace, work: str) -> list[list[str]]:
    from slidegrid.io.grids import grid_uri, read_grid

    archive = os.path.join(work, "archive-b")
    print(f"(b) writing {args.slides} synthetic slides of {args.size}x{args.size} px ...", flush=True)
    _write_archive(archive, args.slides, args.size)
    res, outs = {}, {}
    for n in (1, 2, 3):
        outs[n] = os.path.join(work, f"grids-{n}-node")
        print(f"(b) run_encode on a head (0 CPUs) + {n} worker node(s) x {CORES} CPUs ...", flush=True)
        res[n] = _run_child("cluster", {"nodes": n, "archive": archive, "out": outs[n]})
    ids = [f"m{i:03d}" for i in range(args.slides)]
    grids = {n: {s: read_grid(grid_uri(outs[n], s)) for s in ids if os.path.exists(grid_uri(outs[n], s))}
             for n in outs}
    same = all(len(grids[n]) == len(ids) for n in grids) and all(
        np.array_equal(grids[1][s].embedding, grids[n][s].embedding) and np.array_equal(grids[1][s].row, grids[n][s].row)
        and np.array_equal(grids[1][s].col, grids[n][s].col) for n in (2, 3) for s in ids)
    note = (f"mean-rgb; the nodes share this machine's {CORES} cores: more nodes are more task slots, "
            "not more cores")
    rows = []
    for n, r in res.items():
        rate = r["tiles"] / r["seconds"]
        rows.append(["(b) scale-out", f"head (0 CPUs) + {n} worker node(s) × {CORES} CPUs ({r['nodes']} nodes alive)",
                     f"{args.slides} slides {args.size} px, {r['ok']}/{r['slides']} ok", f"{r['tiles']:,}",
                     f"{r['seconds']:.1f} s, {rate:.1f} tiles/s",
                     f"{rate / r['cpus']:.1f} tiles/s per logical CPU ({r['cpus']:g})", note])
    rows.append(["(b) scale-out", "grids identical across 1, 2, 3 nodes", "", "", "yes" if same else "NO", "",
                 "embedding, row, col of every slide"])
    return rows


# -- (c) driver memory ----------------------------------------------------------------------------------

def _child_memory(spec: dict) -> dict:
    import psutil
    import ray
    import ray.data  # noqa: F401

    from slidegrid.encode import EncodeConfig, run_encode

    ray.init(address="local", num_cpus=CORES, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    me = psutil.Process()
    base = me.memory_info().rss
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    peak, stop = [base], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], me.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        report = run_encode(EncodeConfig(input=spec["archive"], out=spec["out"], mlflow=False, progress=False))
    finally:
        stop.set()
        sampler.join()
    peak[0] = max(peak[0], me.memory_info().rss)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ray.shutdown()
    # ru_maxrss only grows: above `before` it is the run's own peak, which the 20-ms samples may just miss.
    run_peak = max(peak[0], maxrss) if maxrss > before else peak[0]
    return {"base": base, "peak": run_peak, "maxrss": maxrss, "maxrss_before": before, "tiles": report.tiles,
            "seconds": report.seconds, "ok": sum(r.status == "ok" for r in report.results),
            "slides": len(report.results)}


def part_c(args: argparse.Namespace, work: str) -> list[list[str]]:
    small, big = args.mem_slides
    full = os.path.join(work, f"archive-c{big}")
    print(f"(c) writing {big} synthetic slides of {args.mem_size}x{args.mem_size} px ...", flush=True)
    _write_archive(full, big, args.mem_size)
    part = os.path.join(work, f"archive-c{small}")
    os.makedirs(part)
    for name in sorted(os.listdir(full))[:small]:
        os.link(os.path.join(full, name), os.path.join(part, name))
    res = {}
    for n, archive in ((small, part), (big, full)):
        print(f"(c) driver memory, run_encode of {n} slides ...", flush=True)
        res[n] = _run_child("memory", {"archive": archive, "out": os.path.join(work, f"grids-c{n}")})
    mb = 2**20
    note = "driver pid only (not raylet or workers); own local Ray; mean-rgb"
    rows = []
    for n, r in res.items():
        rows.append(["(c) driver memory", f"run_encode of {n} slides", f"{args.mem_size} px, {r['ok']}/{r['slides']} ok",
                     f"{r['tiles']:,}", f"peak RSS during run_encode {r['peak'] / mb:,.0f} MB",
                     f"{r['base'] / mb:,.0f} MB before it (Ray up, modules imported): +{(r['peak'] - r['base']) / mb:,.0f}"
                     f" MB; process lifetime peak (ru_maxrss) {r['maxrss'] / mb:,.0f} MB", note])
    s, b = res[small], res[big]
    grow = (b["peak"] - b["base"]) / max(s["peak"] - s["base"], 1)
    rows.append(["(c) driver memory — ratio", f"{big} slides / {small} slides", "", "",
                 f"peak RSS during run_encode {b['peak'] / s['peak']:.2f}× (target ≈ 1)",
                 f"growth during run_encode {grow:.2f}×; lifetime peak {b['maxrss'] / s['maxrss']:.2f}×", ""])
    return rows


# -- plumbing ------------------------------------------------------------------------------------------

CHILDREN = {"before": _child_before, "after": _child_after, "cluster": _child_cluster, "memory": _child_memory}


def _run_child(kind: str, spec: dict, env: dict[str, str] | None = None, timeout: float = 900) -> dict:
    """Run one measurement in a fresh process (`--child KIND JSON`), `env` added to this one's."""
    t0 = time.time()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        m = run_measured([sys.executable, __file__, "--child", kind, json.dumps(spec)], timeout=timeout)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if m.returncode or m.result is None:
        raise SystemExit(f"{kind} measurement failed (exit {m.returncode}):\n{m.output[-3000:]}")
    print(f"    done in {time.time() - t0:.0f} s", flush=True)
    return m.result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=("a", "b", "c"), default=["a", "b", "c"])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, about 2 minutes)")
    p.add_argument("--tiles", type=int, default=100_000, help="(a) tiles fed to each driver (>= 100,000)")
    p.add_argument("--slide-tiles", type=int, default=10_000, help="(a) tiles per synthetic slide")
    p.add_argument("--slides", type=int, default=6, help="(b) slides in the archive")
    p.add_argument("--size", type=int, default=6144, help="(b) slide side in pixels (0.5 mpp)")
    p.add_argument("--mem-slides", type=int, nargs=2, default=[12, 48], help="(c) the two archive sizes")
    p.add_argument("--mem-size", type=int, default=2048, help="(c) slide side in pixels")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, spec = args.child
        print("RESULT " + json.dumps(CHILDREN[kind](json.loads(spec))), flush=True)
        return
    if args.quick:
        args.tiles, args.slide_tiles = 20_000, 5_000
        args.slides, args.size, args.mem_slides, args.mem_size = 2, 2048, [6, 24], 1024
    os.environ.pop("RAY_ADDRESS", None)  # every child starts its own Ray (or cluster)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="benchmark-scale-") as work:
        for part, fn in (("a", part_a), ("b", part_b), ("c", part_c)):
            if part in args.parts:
                rows += fn(args, work)
    print(f"\n{CORES} cores; whole run {time.time() - t0:.0f} s{' (--quick)' if args.quick else ''}\n")
    print("| part | run | setting | tiles | measured | derived | note |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
