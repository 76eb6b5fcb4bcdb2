"""`slidegrid tiles`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from ..io.storage import parse_storage_options
from .options import (
    MIN_TISSUE_HELP,
    add_keep_ink,
    add_mpp_override,
    add_storage,
)


def _tiles(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from ..geometry.tiling import GridSpec, tile_grid
    from ..geometry.tissue import TissueConfig, tissue_mask
    from ..io.slides import open_slide
    from ..io.storage import atomic_write

    spec = GridSpec(mpp=args.mpp, tile_size=args.tile_size, stride=args.stride, min_tissue=args.min_tissue)
    opts = parse_storage_options(args.storage_options)
    with open_slide(args.uri, opts, args.mpp_override, args.reader) as s:
        grid = tile_grid(s.info.dimensions, s.mpp_xy, spec, tissue_mask(s, TissueConfig(remove_ink=not args.keep_ink)))
    with atomic_write(args.out, opts) as f:
        pq.write_table(grid.to_table(source_uri=args.uri), f)
    print(f"{len(grid)} tiles kept on a {grid.shape[0]}x{grid.shape[1]} grid -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiles", help="tile grid coordinates of a slide (Parquet)")
    p.add_argument("uri", help="slide path or URI")
    p.add_argument("--mpp", type=float, default=0.5, help="target µm/px")
    p.add_argument("--tile-size", type=int, default=224, help="tile side in pixels at --mpp")
    p.add_argument("--stride", type=int, default=None, help="step in pixels at --mpp (default: tile size)")
    p.add_argument("--min-tissue", type=float, default=0.25, help=MIN_TISSUE_HELP)
    p.add_argument("--out", required=True, help="Parquet file to write")
    add_keep_ink(p)
    add_storage(p)
    add_mpp_override(p)
    p.set_defaults(func=_tiles)
