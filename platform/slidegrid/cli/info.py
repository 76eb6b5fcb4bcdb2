"""`slidegrid info`: its flags and the call into the library."""

from __future__ import annotations

import argparse
import json
import sys

from .options import (
    ConfigOptions,
    add_mpp_override,
    add_storage,
    job_argument,
)


def _info(args: argparse.Namespace) -> int:
    with args.slide.build(args) as s:
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
    o = ConfigOptions(p, "slidegrid.io.slides:open_slide", key="slide")
    o.add("uri", help="slide path or URI")
    job_argument(p, "--json", action="store_true", help="print JSON instead of text")
    add_storage(o)
    add_mpp_override(o)
    p.set_defaults(func=_info)
