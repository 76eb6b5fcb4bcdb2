"""`slidegrid synth`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import json
import os

from ..errors import ConfigError
from .options import ConfigOptions, comma_list, job_argument


def _roles(text: str) -> dict[str, int]:
    """`--roles train=40,val=20,test=30` as {role: slides}."""
    roles = {}
    for item in comma_list(text):
        role, _, n = item.partition("=")
        if not n.strip().isdigit():
            raise ConfigError("--roles", f"{item!r}: give ROLE=N pairs, e.g. train=40,val=20,test=20")
        roles[role.strip()] = int(n)
    return roles


def _split_cohorts(args: argparse.Namespace) -> int:
    """--roles: one cohort per role, each tiled from its own patch split, joined with a `split` column."""
    from ..synth.texture import synthesize_split_cohorts

    given = args.options.given(args)
    for flag, name in (("--n", "n"), ("--split", "split")):
        if name in given:
            raise ConfigError(flag, "not with --roles: each role names its slide count and draws from its own split")
    if "texture_from" not in given:
        raise ConfigError("--roles", "needs --texture-from PATCH_ROOT: each role is tiled from its own patch split")
    roles = _roles(args.roles)
    cohort = synthesize_split_cohorts(given.pop("out_dir"), given.pop("texture_from"), roles, **given)
    print(f"wrote {sum(roles.values())} slides ({', '.join(f'{r} {n}' for r, n in roles.items())}) and {cohort}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    if args.roles is not None:
        return _split_cohorts(args)
    cohort = args.options.build(args)
    print(f"wrote {args.options.value(args, 'n')} slides and {cohort}")
    if args.options.value(args, "texture_from"):
        with open(os.path.join(args.out_dir, "texture.json")) as f:
            rep = json.load(f)
        for name in ("normal", "tumour"):
            r = rep[name]
            print(f"{name} cells: {r['cells']} drawn from {r['patches']} {rep['split']!r} patches, "
                  f"{r['distinct_used']} used, {r['mean_uses_per_used_patch']} times each on average (max {r['max_uses']})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write synthetic H&E-like pyramidal slides with ground truth",
                       description="Synthetic slides (tumour / normal), GeoJSON + PNG tumour masks, cohort.csv. "
                                   "Tissue is procedural, or with --texture-from tiled from real H&E patches of one "
                                   "split (README: Real-texture cohorts).")
    o = ConfigOptions(p, "slidegrid.synth.slides:synthesize_archive")
    o.add("out_dir", metavar="outdir", help="output folder")
    o.add("--n", type=int, help="number of slides")
    o.add("--size", type=int, help="slide width in pixels (height is 3/4 of it)")
    o.add("--seed", type=int)
    o.add("--mpp", type=float, help="level-0 µm/px (default 0.5; texture slides are written at --patch-mpp, and a "
          "different --mpp is refused)")
    o.add("--tumour-rate", type=float, help="fraction of slides with tumour")
    o.add("--tumour-radius-um", type=float, nargs=2, metavar=("MIN", "MAX"), convert=tuple,
          help="radius range of each lesion in µm, drawn uniformly (default %(default)s); a tumour slide has 1 or 2 "
          "lesions (tumour_area_um2 in cohort.csv is their sum), each wholly inside its tissue blob, shrunk only "
          "where the blob is too small")
    o.add("--no-progress", field="progress", action="store_false", help="no progress bars")
    g = p.add_argument_group("real texture")
    o.add("--texture-from", metavar="PATCH_ROOT", group=g,
          help="tile tissue from the real patches of PATCH_ROOT/<split>/<0|1>/ (0 normal, 1 tumour; "
               "PATCH_ROOT/index.csv used when present, its duplicate_of rows skipped), e.g. "
               "../shared/data/realworld/patches/pcam; level 0 is lossless (Deflate), the tumour truth is the cells "
               "holding tumour patches; texture.json says how often patches repeat")
    o.add("--split", metavar="S", group=g,
          help="the patch split to draw from (train, valid or test for PCam): one split per cohort role, so no "
               "patch is in two roles")
    o.add("--patch-mpp", type=float, metavar="MPP", group=g,
          help="the patches' µm/px, also the slides' (default 0.97: PatchCamelyon, Camelyon16 at 10x)")
    job_argument(g, "--roles", metavar="ROLE=N,...", default=None,
                 help="instead of --n and --split: one cohort per training role under OUTDIR/<role>/, train from "
                      "the train/ patches, val from valid/, test from test/, joined in OUTDIR/cohort.csv with the "
                      "`split` column `slidegrid train` reads, e.g. train=40,val=20,test=20")
    p.set_defaults(func=_synth)
