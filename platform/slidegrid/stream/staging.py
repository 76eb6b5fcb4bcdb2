"""Staging: where the model stage's workers put each slide's rows until the slide is committed.

Workers write one part file per (batch, slide) under `<out>/.staging/<slide_id>/`; the driver only learns a part's
name and tile indices. A part is named after the tile indices it holds, so a retried task that processes the
same rows rewrites the same name; a retry that batches differently writes overlapping parts, and the commit
keeps each tile once. Parts are uncompressed `.npz` (numpy arrays, no pickle): written once, read once, deleted.
The leading dot keeps the staging folder out of every `*.parquet` glob and of pyarrow's dataset discovery.
"""

from __future__ import annotations

import errno
import hashlib
import io
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import SlidegridError
from ..io.storage import atomic_write, filesystem, join

STAGING = ".staging"


def staging_root(out: str) -> str:
    """The run's staging prefix under the output folder."""
    return join(out, STAGING)


def slide_staging(out: str, slide_id: str) -> str:
    """Where a slide's parts go."""
    return join(out, STAGING, slide_id)


def part_uri(out: str, slide_id: str, index: np.ndarray) -> str:
    """A part's name from the tile indices it holds (the same rows always give the same name)."""
    index = np.ascontiguousarray(index, np.int64)
    digest = hashlib.sha1(index.tobytes()).hexdigest()[:16]
    return join(slide_staging(out, slide_id), f"{int(index.min())}-{len(index)}-{digest}.npz")


def write_part(uri: str, columns: Mapping[str, np.ndarray], storage_options: Mapping[str, Any] | None = None) -> None:
    """Write a part atomically (no fsync: a crash loses the run's staging anyway, and the re-run removes it)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in columns.items()})
    with atomic_write(uri, storage_options, durable=False) as f:
        f.write(buf.getvalue())


def read_parts(uris: list[str], n_tiles: int,
               storage_options: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Concatenate parts into one column set, each tile once, ordered by tile index.

    Raises SlidegridError when a tile of 0..n_tiles-1 is missing (a part lost after the driver counted it).
    """
    cols: dict[str, list[np.ndarray]] = {}
    for uri in uris:
        fs, path = filesystem(uri, storage_options)
        with np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=False) as part:
            for k in part.files:
                cols.setdefault(k, []).append(part[k])
    merged = {k: np.concatenate(v) for k, v in cols.items()}
    index = merged.get("index", np.zeros(0, np.int64))
    unique, first = np.unique(index, return_index=True)
    if len(unique) != n_tiles or (n_tiles and (unique[0] != 0 or unique[-1] != n_tiles - 1)):
        raise SlidegridError(uris[0] if uris else "staging", f"{len(unique)} of {n_tiles} tiles in the staged "
                                                             "parts; run again to redo the slide")
    return {k: v[first] for k, v in merged.items()}


def remove(uri: str, storage_options: Mapping[str, Any] | None = None, attempts: int = 6) -> None:
    """Delete a staging folder and everything under it (nothing when it does not exist).

    A worker of a killed run can still be writing its last part while a re-run clears the staging (it stops when
    it notices its driver is gone, within a second or two): a folder that fills again as it is removed is
    removed again, a few times, before the error stands."""
    fs, path = filesystem(uri, storage_options)
    for attempt in range(attempts):
        try:
            fs.rm(path, recursive=True)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY or attempt == attempts - 1:
                raise
            time.sleep(0.25 * (attempt + 1))
