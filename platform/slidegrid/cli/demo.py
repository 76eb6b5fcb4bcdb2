"""`slidegrid demo`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import ConfigOptions


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.options.build(args))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole flow on generated slides: synth -> tissue -> encode -> train",
                       description="Synthesize a labelled archive, tissue masks, encode it with Ray Data, train "
                       "the attention classifier with Ray Train, evaluate held-out slides, log to MLflow.")
    o = ConfigOptions(p, "slidegrid.demo:DemoConfig")
    o.add("--out", help="output folder (default ./%(default)s)")
    o.add("--slides", type=int)
    o.add("--size", type=int, help="slide width in pixels")
    o.add("--seed", type=int)
    o.add("--workers", type=int, help="Ray Train workers")
    o.add("--epochs", type=int, help="training epochs (default: the attention paper's recipe, 35 epochs of 38 "
          "optimizer steps at batch 64)")
    o.add("--texture-from", metavar="PATCH_ROOT", help="tile the slides' tissue from the real patches of a "
          "PatchCamelyon-style folder (train/ valid/ test/ -> training, validation and test slides), read at 0.97 "
          "µm/px; default: the fast procedural slides")
    p.set_defaults(func=_demo)
