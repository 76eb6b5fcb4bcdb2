"""`slidegrid show`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from ..io.storage import parse_storage_options
from .options import (
    add_storage,
)


def _show(args: argparse.Namespace) -> int:
    from ..io.grids import read_grid
    from ..preview import grid_preview
    from ..viz import save_png

    opts = parse_storage_options(args.storage_options)
    grid = read_grid(args.grid, opts)
    save_png(grid_preview(grid, opts, height=args.height), args.out)
    h, w = grid.shape
    print(f"{args.out}: {len(grid.row)} tiles on a {h}x{w} grid, C={grid.code_size}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="render a grid (3 principal components as RGB) beside the slide thumbnail")
    p.add_argument("grid", help="a grid file (<grids>/<slide_id>.parquet)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--height", type=int, default=512, help="image height in pixels")
    add_storage(p)
    p.set_defaults(func=_show)
