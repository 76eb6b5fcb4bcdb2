"""`slidegrid synth`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import json
import os


def _synth(args: argparse.Namespace) -> int:
    from ..synth.slides import synthesize_archive

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


def register(sub: argparse._SubParsersAction) -> None:
    from ..synth.slides import SyntheticSpec

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
