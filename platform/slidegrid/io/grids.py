"""The grid store: one Parquet file per slide (DESIGN.md "Grid file"), read back as dense (C, H, W) tensors.

A grid encoded with `--dihedral` (NIC §3.2: "90-degree rotation and mirroring, encoding each image 8 times")
holds 8 rows per kept tile, one per element of D4, told apart by an int8 `transform` column (TRANSFORMS
below gives the order); its rows are stored transform by transform, each transform one row group, so a
reader that does not ask for the transforms reads transform 0 (the tiles as they are) and gets exactly the
grid an unflagged run writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SlidegridError
from .storage import atomic_write, filesystem, join

META_KEY = b"slidegrid"
MANIFEST_NAME = "_manifest.parquet"
# The elements of D4 in `transform` order (dihedral() applies them): k = 0..3 rotate k x 90° counter-clockwise
# (np.rot90 from the row axis towards the column axis), k = 4..7 rotate the same and then mirror left-right.
# 0 is the identity.
TRANSFORMS = ("identity", "rot90", "rot180", "rot270", "mirror", "rot90+mirror", "rot180+mirror",
              "rot270+mirror")


@dataclass
class Grid:
    """One slide's grid: kept tiles with their grid index, level-0 position, tissue fraction and embedding."""

    meta: dict[str, Any]
    row: np.ndarray
    col: np.ndarray
    x: np.ndarray
    y: np.ndarray
    tissue: np.ndarray
    embedding: np.ndarray  # (N, C)
    # (8, N, C): transforms[k, i] embeds tile i transformed by TRANSFORMS[k] (transforms[0] == embedding); only
    # when read with transforms=True from a grid encoded with --dihedral, else None.
    transforms: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """Grid (rows H, cols W)."""
        h, w = self.meta["grid_shape"]
        return int(h), int(w)

    @property
    def code_size(self) -> int:
        """Embedding channels C."""
        return int(self.meta["code_size"])

    def dense(self, dtype=np.float32, transform: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(C, H, W) array with zeros where no tile was kept, and the (H, W) bool mask of kept cells.

        `transform` k > 0: the embeddings of the tiles transformed by TRANSFORMS[k], each still at its own
        (untransformed) cell; `dihedral(dense, k)` then gives the grid of the whole slide transformed by k.
        Raises ValueError when the grid was not read with its transforms.
        """
        if transform and self.transforms is None:
            raise ValueError(f"transform {transform} asked of a grid read without transforms "
                             f"(dihedral: {bool(self.meta.get('dihedral'))})")
        emb = self.transforms[transform] if transform else self.embedding
        h, w = self.shape
        out = np.zeros((self.code_size, h, w), dtype)
        out[:, self.row, self.col] = emb.T
        mask = np.zeros((h, w), bool)
        mask[self.row, self.col] = True
        return out, mask


def grid_uri(grids: str, slide_id: str) -> str:
    """Where a slide's grid lives."""
    return join(grids, f"{slide_id}.parquet")


def grid_table(row: np.ndarray, col: np.ndarray, x: np.ndarray, y: np.ndarray, tissue: np.ndarray,
               embedding: np.ndarray, meta: Mapping[str, Any]) -> pa.Table:
    """Build the Parquet table of the grid contract, with metadata under key `slidegrid`.

    `embedding`: (N, C), or (N, 8, C) for a --dihedral grid (embedding[i, k] of tile i transformed by
    TRANSFORMS[k]): then 8 x N rows, transform-major, with the `transform` column.
    """
    emb = np.ascontiguousarray(embedding)
    cols = {"row": pa.array(row, pa.int32()), "col": pa.array(col, pa.int32()), "x": pa.array(x, pa.int64()),
            "y": pa.array(y, pa.int64()), "tissue": pa.array(tissue, pa.float32())}
    if emb.ndim == 3:
        t = emb.shape[1]
        cols = {k: pa.concat_arrays([v] * t) for k, v in cols.items()}
        cols["transform"] = pa.array(np.repeat(np.arange(t, dtype=np.int8), emb.shape[0]), pa.int8())
        emb = np.ascontiguousarray(emb.transpose(1, 0, 2)).reshape(-1, emb.shape[2])
    n, c = emb.shape
    values = pa.array(emb.reshape(-1), type=pa.from_numpy_dtype(emb.dtype))
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(values, c) if n else pa.array([], pa.list_(values.type, c))
    return pa.table(cols).replace_schema_metadata({META_KEY: json.dumps(dict(meta), sort_keys=True).encode()})


def write_grid(uri: str, table: pa.Table, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write a grid table atomically (temporary name + rename locally, one PUT on object stores); a --dihedral
    grid as one row group per transform (readers of transform 0 skip the other seven)."""
    group = table.num_rows // len(TRANSFORMS) if "transform" in table.column_names else None
    with atomic_write(uri, storage_options) as f:
        pq.write_table(table, f, compression="zstd", row_group_size=group or None)


def read_grid_meta(uri: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The `slidegrid` metadata of a grid file from its footer only; None if the file does not exist."""
    fs, path = filesystem(uri, storage_options)
    try:
        with fs.open(path, "rb") as f:
            md = pq.ParquetFile(f).schema_arrow.metadata or {}
    except FileNotFoundError:
        return None
    except Exception:
        return None  # unreadable / partial file from another tool: treat as not done
    raw = md.get(META_KEY)
    return json.loads(raw) if raw else None


def read_grid(uri: str, storage_options: Mapping[str, Any] | None = None, transforms: bool = False) -> Grid:
    """Read one slide's grid file: the tiles as they are (transform 0 of a --dihedral grid, the same Grid an
    unflagged run gives), or with `transforms` also Grid.transforms (8, N, C) when the grid has them (None
    when it has not). Raises SlidegridError for a missing file, a file without slidegrid metadata, or a
    --dihedral grid whose transforms do not hold the same tiles."""
    fs, path = filesystem(uri, storage_options)
    try:
        with fs.open(path, "rb") as f:
            names = pq.ParquetFile(f).schema_arrow.names
            f.seek(0)
            # The transform column's row-group statistics let the reader skip transforms 1..7.
            only_first = "transform" in names and not transforms
            table = pq.read_table(f, filters=[("transform", "==", 0)] if only_first else None)
    except FileNotFoundError:
        raise SlidegridError(uri, "grid file not found; run `slidegrid encode` first") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise SlidegridError(uri, "not a slidegrid grid file (no `slidegrid` metadata)")
    meta = json.loads(raw)
    emb_col = table.column("embedding").combine_chunks()
    c = int(meta["code_size"])
    emb = emb_col.flatten().to_numpy(zero_copy_only=False).reshape(-1, c)
    col = {k: table.column(k).to_numpy() for k in ("row", "col", "x", "y", "tissue")}
    if "transform" not in table.column_names or only_first:
        return Grid(meta=meta, embedding=emb, **col)
    t = table.column("transform").to_numpy()
    first = t == 0
    stack = [emb[t == k] for k in range(len(TRANSFORMS))]
    # Transform k's i-th row must be the same tile as transform 0's i-th (grid_table writes them so).
    aligned = all(np.array_equal(col[k][t == j], col[k][first]) for j in range(1, len(TRANSFORMS))
                  for k in ("row", "col"))
    if not aligned:
        raise SlidegridError(uri, "the transforms of this --dihedral grid do not hold the same tiles; encode the "
                                  "slide again (slidegrid encode --dihedral --overwrite)")
    return Grid(meta=meta, embedding=stack[0], transforms=np.stack(stack), **{k: v[first] for k, v in col.items()})


def dihedral(a: np.ndarray, k: int, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """TRANSFORMS[k] (k in 0..7) applied to the (rows, cols) `axes` of `a` (NIC §3.2 augmentation): a view.

    The default axes are those of a (C, H, W) grid or an (H, W) mask; (-3, -2) those of (..., H, W, 3) RGB
    tiles. Applying k to the cell arrangement and to every tile with the same k is transforming the slide.
    Raises ValueError for k outside 0..7.
    """
    if not 0 <= k < len(TRANSFORMS):
        raise ValueError(f"dihedral index {k} not in 0..7")
    out = np.rot90(a, k % 4, axes=axes)
    return np.flip(out, axis=axes[1]) if k >= 4 else out
