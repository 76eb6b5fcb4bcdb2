"""Benchmark: reading tiles through slidegrid vs a bare tiffslide loop; tissue masks and writing giant slides.

    python jobs/benchmarks/benchmark_read.py [--size 100000x80000] [--sparse 150000x40000] [--quick]

One run, one table:
  (a) tiles/s reading 224-px tiles at 0.5 mpp through `Slide.read_region` with each reader backend vs a bare
      `tiffslide.TiffSlide.read_region(as_array=True)` / `openslide.OpenSlide.read_region` loop over the same
      tissue tiles of the large slide, interleaved rounds, every reader opened afresh each round (target >= 0.9x);
  (b) peak memory (and time) writing a synthetic slide of --size (tile by tile);
  (c) time and peak memory of the tissue mask of that slide (target: a few seconds, < 1 GB);
  (d) tissue mask + tile grid (224 px at 0.5 mpp) of a wide sparse slide (--sparse, 0.25 µm/px, three tissue
      pieces on glass, pyramid down to < 1,024 px) against the same on a small 4096x3072 slide, the baseline:
      peak memory must stay within a few hundred MB of the small slide's whatever level 0's size (issue 11).
Each step runs in a fresh subprocess and reports its own peak RSS (ru_maxrss), so steps don't pollute each other.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

import _bootstrap  # noqa: F401


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_write(path: str, w: int, h: int, mpp: float = 0.5) -> dict:
    """Write a synthetic slide of w x h pixels at `mpp`."""
    from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide

    t0 = time.perf_counter()
    write_synthetic_slide(path, SyntheticSpec(width=w, height=h, mpp=mpp, seed=1, n_tumours=2))
    return {"seconds": time.perf_counter() - t0}


def step_tissue(path: str) -> dict:
    """Tissue mask of the slide (reads only a small pyramid level)."""
    from slidegrid.geometry.tissue import tissue_mask
    from slidegrid.io.slides import open_slide

    t0 = time.perf_counter()
    with open_slide(path) as s:
        m = tissue_mask(s)
    return {"seconds": time.perf_counter() - t0, "fraction": m.fraction, "mask": list(m.mask.shape)}


def step_grid(path: str) -> dict:
    """Tissue mask, then the tile grid, then a dense one (stride 16: ~6 M cells on a 150,000-px slide), each
    timed, with the process's peak RSS after imports and after each (so the table says which step raises it)."""
    from slidegrid.geometry.tiling import GridSpec, tile_grid
    from slidegrid.geometry.tissue import tissue_mask
    from slidegrid.io.slides import open_slide

    imports_mb = _peak_mb()
    t0 = time.perf_counter()
    with open_slide(path) as s:
        m = tissue_mask(s)
        t1 = time.perf_counter()
        mask_mb = _peak_mb()
        grid = tile_grid(s.info.dimensions, s.mpp_xy, GridSpec(mpp=0.5, tile_size=224), m)
        t2 = time.perf_counter()
        grid_mb = _peak_mb()
        dense = tile_grid(s.info.dimensions, s.mpp_xy, GridSpec(mpp=0.5, tile_size=224, stride=16), m)
    t3 = time.perf_counter()
    return {"mask_s": t1 - t0, "grid_s": t2 - t1, "dense_s": t3 - t2, "imports_mb": imports_mb, "mask_mb": mask_mb,
            "grid_mb": grid_mb, "mask": list(m.mask.shape), "tiles": len(grid), "grid_shape": list(grid.shape),
            "dense_cells": dense.shape[0] * dense.shape[1]}


def step_reads(path: str, n: int) -> dict:
    """Same tiles, interleaved rounds, each backend freshly opened every round (no decoded tile carried over):
    bare tiffslide and OpenSlide loops vs Slide.read_region through each reader (best of 3 rounds each)."""
    import openslide
    import tiffslide

    from slidegrid.geometry.tiling import GridSpec, tile_grid
    from slidegrid.geometry.tissue import tissue_mask
    from slidegrid.io.slides import open_slide

    with open_slide(path) as s:
        grid = tile_grid(s.info.dimensions, s.mpp_xy, GridSpec(mpp=0.5, tile_size=224), tissue_mask(s))
    idx = np.random.default_rng(0).choice(len(grid), size=min(n, len(grid)), replace=False)
    xs, ys = grid.x[idx].tolist(), grid.y[idx].tolist()
    runs = {
        "bare_tiffslide": (lambda: tiffslide.TiffSlide(path),
                           lambda r, x, y: r.read_region((x, y), 0, (224, 224), as_array=True)),
        "tiffslide": (lambda: open_slide(path, reader="tiffslide"), lambda r, x, y: r.read_region(x, y, 224, 224, 0.5)),
        "bare_openslide": (lambda: openslide.OpenSlide(path), lambda r, x, y: np.asarray(r.read_region((x, y), 0, (224, 224)))),
        "openslide": (lambda: open_slide(path, reader="openslide"), lambda r, x, y: r.read_region(x, y, 224, 224, 0.5)),
    }
    best = dict.fromkeys(runs, 0.0)
    for _ in range(3):
        for name, (opener, read) in runs.items():
            reader = opener()
            t0 = time.perf_counter()
            for x, y in zip(xs, ys):
                read(reader, x, y)
            best[name] = max(best[name], len(xs) / (time.perf_counter() - t0))
            reader.close()
    return {**best, "tiles": len(xs)}


def _run(step: str, *args: str) -> dict:
    # stderr passes through, so a failing step shows its traceback where the user looks.
    out = subprocess.run([sys.executable, __file__, "--step", step, *args], stdout=subprocess.PIPE, text=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode or not line:
        raise SystemExit(f"benchmark step {step!r} failed (exit code {out.returncode}); see its output above")
    return json.loads(line[7:])


def main() -> None:
    """Parse arguments, run each step in its own process, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="100000x80000", help="WxH of the large synthetic slide")
    p.add_argument("--sparse", default="150000x40000", help="WxH of the wide sparse slide (0.25 µm/px)")
    p.add_argument("--tiles", type=int, default=2000, help="tiles in the read comparison")
    p.add_argument("--quick", action="store_true", help="small slide (smoke test)")
    p.add_argument("--step", default=None, help=argparse.SUPPRESS)
    p.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.step:
        fn = {"write": lambda: step_write(a.args[0], int(a.args[1]), int(a.args[2]), *map(float, a.args[3:])),
              "tissue": lambda: step_tissue(a.args[0]), "grid": lambda: step_grid(a.args[0]),
              "reads": lambda: step_reads(a.args[0], int(a.args[1]))}
        res = fn[a.step]()
        res["peak_mb"] = _peak_mb()
        print("RESULT " + json.dumps(res))
        return
    w, h = (4096, 3072) if a.quick else tuple(int(v) for v in a.size.lower().split("x"))
    sw, sh = (15000, 4000) if a.quick else tuple(int(v) for v in a.sparse.lower().split("x"))
    with tempfile.TemporaryDirectory() as d:
        big = os.path.join(d, "big.tiff")
        print(f"writing a {w}x{h} synthetic slide to {d} ...", flush=True)
        wr = _run("write", big, str(w), str(h))
        size_mb = os.path.getsize(big) / 1e6
        print("tissue mask ...", flush=True)
        ti = _run("tissue", big)
        print("tile reads ...", flush=True)
        rd = _run("reads", big, str(a.tiles))
        small, sparse = os.path.join(d, "small.tiff"), os.path.join(d, "sparse.tiff")
        print(f"writing a 4096x3072 slide and a {sw}x{sh} sparse slide ...", flush=True)
        _run("write", small, "4096", "3072")
        sp_wr = _run("write", sparse, str(sw), str(sh), "0.25")
        print("tissue mask + tile grid, small and sparse ...", flush=True)
        base, sp = _run("grid", small), _run("grid", sparse)
    print(f"\n{os.cpu_count()} cores; large slide {w}x{h} px ({w * h / 1e9:.1f} gigapixels, {size_mb:.0f} MB on disk)\n")
    print("| measurement | slidegrid | baseline | ratio / target |")
    print("|---|---|---|---|")
    for reader in ("tiffslide", "openslide"):
        ours, bare = rd[reader], rd[f"bare_{reader}"]
        print(f"| 224-px tiles at 0.5 mpp, tiles/s ({rd['tiles']} tiles), --reader {reader} | {ours:.0f} | "
              f"{bare:.0f} (bare {reader} loop) | {ours / bare:.2f}x (target >= 0.9x) |")
    print(f"| tissue mask of the large slide | {ti['seconds']:.1f} s, peak {ti['peak_mb']:.0f} MB | - | "
          f"target: a few seconds, < 1024 MB |")
    full_mb = w * h * 3 / 1e6
    print(f"| writing the large slide (tiles + ground-truth masks) | {wr['seconds']:.0f} s, peak {wr['peak_mb']:.0f} MB "
          f"| full RGB image: {full_mb:.0f} MB | {wr['peak_mb'] / full_mb:.1%} of the full image |")

    def grid_cell(r: dict) -> str:
        return (f"mask {r['mask_s']:.1f} s + grid {r['grid_s']:.2f} s ({r['tiles']} tiles on "
                f"{r['grid_shape'][0]}x{r['grid_shape'][1]}), peak {r['grid_mb']:.0f} MB (imports "
                f"{r['imports_mb']:.0f}, after mask {r['mask_mb']:.0f})")

    print(f"| tissue mask + tile grid, {sw}x{sh} sparse slide at 0.25 µm/px ({sp_wr['seconds']:.0f} s to write) | "
          f"{grid_cell(sp)} | 4096x3072 slide: {grid_cell(base)} | {sp['grid_mb'] - base['grid_mb']:+.0f} MB "
          f"(target: within a few hundred MB) |")
    print(f"| tile grid at stride 16 px on the sparse slide ({sp['dense_cells']:,} cells) | {sp['dense_s']:.1f} s, "
          f"peak {sp['peak_mb']:.0f} MB | 4096x3072 slide: {base['dense_s']:.2f} s, peak {base['peak_mb']:.0f} MB | "
          f"{sp['peak_mb'] - sp['grid_mb']:+.0f} MB over the default grid's peak |")


if __name__ == "__main__":
    main()
