"""`slidegrid encoders`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import json

from .options import job_argument


def _encoders(args: argparse.Namespace) -> int:
    from ..encoders.listing import catalogue, table

    cat = catalogue()
    if args.json:
        print(json.dumps(cat, indent=2))
    else:
        print("\n".join(table(cat)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encoders", help="list the tile encoders: foundation-model presets (weights found locally "
                       "or not), mean-rgb, timm:ARCH and the learned ones",
                       description="Every foundation-model preset with its embedding size, parameters, native tile "
                       "size and µm/px, licence, whether its weights are gated, and where its weights are in the "
                       "local Hugging Face cache (nothing is downloaded); then the other encoders.")
    job_argument(p, "--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_encoders)
