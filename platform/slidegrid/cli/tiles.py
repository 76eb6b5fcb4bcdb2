"""`slidegrid tiles`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import (
    MIN_TISSUE_HELP,
    ConfigOptions,
    add_keep_ink,
    add_mpp_override,
    add_storage,
    job_argument,
)


def _tiles(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from ..geometry.tiling import tile_grid
    from ..geometry.tissue import tissue_mask
    from ..io.storage import atomic_write

    opts = args.slide.value(args, "storage_options")
    with args.slide.build(args) as s:
        grid = tile_grid(s.info.dimensions, s.mpp_xy, args.grid.build(args), tissue_mask(s, args.tissue.build(args)))
    with atomic_write(args.out, opts) as f:
        pq.write_table(grid.to_table(source_uri=args.uri), f)
    print(f"{len(grid)} tiles kept on a {grid.shape[0]}x{grid.shape[1]} grid -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiles", help="tile grid coordinates of a slide (Parquet)")
    slide = ConfigOptions(p, "slidegrid.io.slides:open_slide", key="slide")
    grid = ConfigOptions(p, "slidegrid.geometry.tiling:GridSpec", key="grid")
    tissue = ConfigOptions(p, "slidegrid.geometry.tissue:TissueConfig", key="tissue")
    slide.add("uri", help="slide path or URI")
    grid.add("--mpp", type=float, help="target µm/px")
    grid.add("--tile-size", type=int, help="tile side in pixels at --mpp")
    grid.add("--stride", type=int, help="step in pixels at --mpp (default: tile size)")
    grid.add("--min-tissue", type=float, help=MIN_TISSUE_HELP)
    job_argument(p, "--out", required=True, help="Parquet file to write")
    add_keep_ink(tissue)
    add_storage(slide)
    add_mpp_override(slide)
    p.set_defaults(func=_tiles)
