"""`slidegrid show`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import (
    ConfigOptions,
    add_storage,
    job_argument,
)


def _show(args: argparse.Namespace) -> int:
    from ..viz import save_png

    grid = args.grid_file.build(args)
    save_png(args.preview.build(args, grid=grid, storage_options=grid_options(args)), args.out)
    h, w = grid.shape
    print(f"{args.out}: {len(grid.row)} tiles on a {h}x{w} grid, C={grid.code_size}")
    return 0


def grid_options(args: argparse.Namespace) -> dict:
    """--storage-options: for the grid file and, through it, the slide it came from."""
    return args.grid_file.value(args, "storage_options") or {}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="render a grid (3 principal components as RGB) beside the slide thumbnail")
    grid = ConfigOptions(p, "slidegrid.io.grids:read_grid", key="grid_file")
    grid.add("uri", metavar="grid", help="a grid file (<grids>/<slide_id>.parquet)")
    job_argument(p, "--out", required=True, help="PNG to write")
    ConfigOptions(p, "slidegrid.preview:grid_preview", key="preview").add("--height", type=int,
                                                                            help="image height in pixels")
    add_storage(grid)
    p.set_defaults(func=_show)
