"""`slidegrid demo`: its flags and the call into the library."""

from __future__ import annotations

import argparse


def _demo(args: argparse.Namespace) -> int:
    from ..demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=args.out, slides=args.slides, size=args.size, seed=args.seed, workers=args.workers,
                        epochs=args.epochs, texture_from=args.texture_from))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
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
