"""Benchmark: slide inference (`slidegrid segment`) throughput and peak memory, one run, one table.

    python jobs/benchmarks/benchmark_segment.py [--quick] [--slides N] [--size PX]

Every combination of stride = tile vs tile/2, one member vs the whole ensemble (3 members), and with vs without
test-time augmentation (6 transforms), each `run_segment` in a fresh process (its own local Ray) whose
peak memory is sampled (_measure.run_measured). The ensemble is untrained (throughput does not depend on the weights);
--quick uses tiny members and small slides so that the table comes out in a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile

from _measure import run_measured

import _bootstrap  # noqa: F401


def _ensemble(path: str, quick: bool, patch: int, mpp: float) -> None:
    """Three untrained members (the paper's architectures, or tiny U-Nets with --quick) in ensemble.pt."""
    import torch

    from slidegrid.models import build_model
    from slidegrid.models.seg_ensemble import save_ensemble
    from slidegrid.train.segmentation.config import PAPER_ENSEMBLE, TINY_SMP
    from slidegrid.train.segmentation.data import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    names = ["unet-densenet121"] * 3 if quick else list(PAPER_ENSEMBLE)
    kwargs = dict(TINY_SMP) if quick else {}
    members = [{"name": n, "kwargs": kwargs, "state": build_model(n, 3, 2, **kwargs).state_dict()} for n in names]
    save_ensemble(path, members, {"mpps": [mpp], "patch_size": patch, "mean": list(IMAGENET_MEAN),
                                  "std": list(IMAGENET_STD), "names": names})


def _child(args: argparse.Namespace) -> None:
    from slidegrid.segment import SegmentConfig, run_segment

    report = run_segment(SegmentConfig(input=args.input, model=args.model, out=args.out, tile_size=args.tile,
                                       stride=args.stride, members=args.members, tta=args.tta == "on",
                                       heatmap_mpp=args.heatmap_mpp, batch_size=4, progress=False))
    print("RESULT " + json.dumps({"tiles": report.tiles, "seconds": report.seconds,
                                  "tiles_per_s": report.tiles_per_s, "mp_per_s": report.megapixels_per_s,
                                  "ok": sum(r.status == "ok" for r in report.results)}))


def main() -> None:
    """Parse arguments; run the grid of measurements (or, with --child, one of them)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny members, 4096-px slides, 128-px tiles")
    p.add_argument("--slides", type=int, default=None)
    p.add_argument("--size", type=int, default=None, help="slide width in px (0.5 µm/px)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("input", "model", "out"):
        p.add_argument(f"--{name}", help=argparse.SUPPRESS)
    for name in ("tile", "stride", "members"):
        p.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    p.add_argument("--tta", help=argparse.SUPPRESS)
    p.add_argument("--heatmap-mpp", type=float, default=8.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    from slidegrid.synth.slides import synthesize_archive

    slides, size = args.slides or 2, args.size or (4096 if args.quick else 8192)
    patch, mpp = (32, 2.0) if args.quick else (256, 0.5)
    tile = 4 * patch  # the paper's inference tile: 4x the training patch
    with tempfile.TemporaryDirectory() as root:
        cohort = synthesize_archive(os.path.join(root, "slides"), n=slides, size=size, seed=0, progress=False)
        model = os.path.join(root, "ensemble.pt")
        _ensemble(model, args.quick, patch, mpp)
        rows = []
        for stride, members, tta in itertools.product((tile, tile // 2), (1, 3), ("off", "on")):
            out = os.path.join(root, f"out-{stride}-{members}-{tta}")
            m = run_measured([sys.executable, __file__, "--child", "--input", cohort, "--model", model, "--out", out,
                              "--tile", str(tile), "--stride", str(stride), "--members", str(members),
                              "--tta", tta, "--heatmap-mpp", str(8.0)], timeout=1800)
            r = m.result or {}
            rows.append((f"{'tile' if stride == tile else 'tile/2'} ({stride} px)", members, tta, r.get("tiles", "-"),
                         f"{r['tiles_per_s']:.2f}" if r else "failed", f"{r['mp_per_s']:.3f}" if r else "-",
                         f"{m.peak_bytes / 2**30:.2f}"))
            print(rows[-1], flush=True)
    print(f"\n{slides} synthetic slide(s) {size} x {size * 3 // 4} px at 0.5 µm/px; inference tiles {tile} px at "
          f"{mpp} µm/px; members: {'tiny U-Nets' if args.quick else 'the paper ensemble'}; CPU only\n")
    print("| stride | members | TTA | tiles | tiles/s | megapixels/s | peak memory (GB) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
