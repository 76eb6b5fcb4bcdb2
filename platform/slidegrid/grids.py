"""The grid store: one Parquet file per slide (DESIGN.md "Grid file"), read back as dense (C, H, W) tensors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import SlidegridError
from .storage import atomic_write, filesystem, join

META_KEY = b"slidegrid"
MANIFEST_NAME = "_manifest.parquet"


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

    @property
    def shape(self) -> tuple[int, int]:
        """Grid (rows H, cols W)."""
        h, w = self.meta["grid_shape"]
        return int(h), int(w)

    @property
    def code_size(self) -> int:
        """Embedding channels C."""
        return int(self.meta["code_size"])

    def dense(self, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(C, H, W) array with zeros where no tile was kept, and the (H, W) bool mask of kept cells."""
        h, w = self.shape
        out = np.zeros((self.code_size, h, w), dtype)
        out[:, self.row, self.col] = self.embedding.T
        mask = np.zeros((h, w), bool)
        mask[self.row, self.col] = True
        return out, mask


def grid_uri(grids: str, slide_id: str) -> str:
    """Where a slide's grid lives."""
    return join(grids, f"{slide_id}.parquet")


def grid_table(row: np.ndarray, col: np.ndarray, x: np.ndarray, y: np.ndarray, tissue: np.ndarray,
               embedding: np.ndarray, meta: Mapping[str, Any]) -> pa.Table:
    """Build the Parquet table of the grid contract, with metadata under key `slidegrid`."""
    emb = np.ascontiguousarray(embedding)
    n, c = emb.shape
    values = pa.array(emb.reshape(-1), type=pa.from_numpy_dtype(emb.dtype))
    table = pa.table({
        "row": pa.array(row, pa.int32()),
        "col": pa.array(col, pa.int32()),
        "x": pa.array(x, pa.int64()),
        "y": pa.array(y, pa.int64()),
        "tissue": pa.array(tissue, pa.float32()),
        "embedding": pa.FixedSizeListArray.from_arrays(values, c) if n else pa.array([], pa.list_(values.type, c)),
    })
    return table.replace_schema_metadata({META_KEY: json.dumps(dict(meta), sort_keys=True).encode()})


def write_grid(uri: str, table: pa.Table, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write a grid table atomically (temporary name + rename locally, one PUT on object stores)."""
    with atomic_write(uri, storage_options) as f:
        pq.write_table(table, f, compression="zstd")


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


def read_grid(uri: str, storage_options: Mapping[str, Any] | None = None) -> Grid:
    """Read one slide's grid file."""
    fs, path = filesystem(uri, storage_options)
    try:
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
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
    return Grid(meta=meta, embedding=emb, **col)


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """The k-th (0..7) of the 8 dihedral transforms of the last two axes (NIC §3 augmentation)."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral index {k} not in 0..7")
    out = np.rot90(a, k % 4, axes=(-2, -1))
    return np.flip(out, axis=-1) if k >= 4 else out
