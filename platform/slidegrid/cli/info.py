"""`slidegrid info`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import json
import sys

from ..io.storage import parse_storage_options
from .options import (
    add_mpp_override,
    add_storage,
)


def _info(args: argparse.Namespace) -> int:
    from ..io.slides import open_slide

    with open_slide(args.uri, parse_storage_options(args.storage_options), args.mpp_override, args.reader) as s:
        info = s.info
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    mpp = f"{info.mpp_x:.4f} × {info.mpp_y:.4f} µm/px ({info.mpp_source})" if info.mpp_x else "unknown"
    if any("implausible" in w for w in info.warnings):
        mpp += " — implausible, ignored: pass --mpp-override"
    print(f"uri:        {info.uri}")
    print(f"vendor:     {info.vendor or 'unknown'}")
    print(f"reader:     {info.reader}")
    print(f"dimensions: {info.dimensions[0]} × {info.dimensions[1]} px")
    print(f"mpp:        {mpp}")
    print(f"objective:  {info.objective_power or 'unknown'}")
    print(f"file size:  {info.file_size} bytes")
    print(f"levels:     {info.level_count}")
    for lvl, (dims, ds) in enumerate(zip(info.level_dimensions, info.level_downsamples)):
        print(f"  {lvl}: {dims[0]} × {dims[1]}  downsample {ds:.3f}")
    for w in info.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a slide's metadata (levels, mpp, vendor)",
                       description="Open a slide (path, file://, s3://, any fsspec URL) and print its metadata.")
    p.add_argument("uri", help="slide path or URI")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_storage(p)
    add_mpp_override(p)
    p.set_defaults(func=_info)
