"""The archive manifest (DESIGN.md "Manifest"): one row per slide with its outcome, written atomically."""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .grids import MANIFEST_NAME
from .storage import atomic_write, filesystem, join

# ok: grid written; failed: the slide could not be encoded (error says why); skipped_no_tissue: no tile passed
# --min-tissue; skipped_not_a_slide: a file of a listed folder/prefix that is not a slide (error says why).
STATUSES = ("ok", "failed", "skipped_no_tissue", "smaller_than_tile", "skipped_not_a_slide")
# Rewrite the manifest at most this often while a run goes on, so a killed driver leaves a recent one.
FLUSH_SECONDS = 30.0


@dataclass(frozen=True)
class SlideResult:
    """What happened to one slide in an encode run."""

    slide_id: str
    uri: str
    status: str
    tiles: int
    seconds: float
    error: str
    settings_hash: str
    reused: bool = False  # done by an earlier run with the same settings


_SCHEMA = pa.schema([("slide_id", pa.string()), ("uri", pa.string()), ("status", pa.string()),
                     ("tiles", pa.int64()), ("seconds", pa.float64()), ("error", pa.string()),
                     ("settings_hash", pa.string()), ("reused", pa.bool_())])


class ManifestWriter:
    """Collects results and rewrites `<grids>/_manifest.parquet`, keeping rows of slides not in this run."""

    def __init__(self, out: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.uri = join(out, MANIFEST_NAME)
        self._opts = storage_options
        self._previous = read_manifest(self.uri, storage_options)
        self._results: dict[str, SlideResult] = {}
        self._last_flush = time.time()

    def previous(self) -> dict[str, dict[str, Any]]:
        """Rows of the manifest as it was before this run, by slide id."""
        return dict(self._previous)

    def has(self, slide_id: str) -> bool:
        """Whether this run already recorded the slide."""
        return slide_id in self._results

    def add(self, result: SlideResult) -> None:
        """Record a slide's outcome (flushes to storage every FLUSH_SECONDS)."""
        self._results[result.slide_id] = result
        if time.time() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def results(self) -> list[SlideResult]:
        """This run's results in the order they were recorded."""
        return list(self._results.values())

    def flush(self) -> None:
        """Write the merged manifest atomically."""
        rows = {**self._previous, **{k: asdict(v) for k, v in self._results.items()}}
        table = pa.Table.from_pylist(sorted(rows.values(), key=lambda r: r["slide_id"]), schema=_SCHEMA)
        with atomic_write(self.uri, self._opts) as f:
            pq.write_table(table, f)
        self._last_flush = time.time()


def read_manifest(uri: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """A manifest's rows by slide id: `uri` is the manifest file or the output folder holding it (a grid store,
    segment's output); empty when there is none yet."""
    fs, path = filesystem(uri, storage_options)
    if fs.isdir(path):
        fs, path = filesystem(join(uri, MANIFEST_NAME), storage_options)
    try:
        with fs.open(path, "rb") as f:
            table = pq.read_table(io.BytesIO(f.read()))
    except FileNotFoundError:
        return {}
    return {r["slide_id"]: r for r in table.to_pylist()}


def summarize(results: list[SlideResult]) -> dict[str, int]:
    """Counts per status (every status of manifest.STATUSES, 0 when absent), slides reused and tiles."""
    out: dict[str, int] = {**dict.fromkeys(STATUSES, 0), "reused": 0, "tiles": 0}
    for r in results:
        out[r.status] = out.get(r.status, 0) + 1
        out["reused"] += int(r.reused)
        out["tiles"] += r.tiles
    return out


# Exit codes of the commands that process an archive: 0 every slide ok or skipped, 2 bad configuration or
# input (cli.main), 3 some slides failed (how many is in the summary line), 130 interrupted (cli.main).
# One fixed code: the failure count used before made two failed slides read as a configuration error.
EXIT_SLIDES_FAILED = 3


def exit_code(results: list[SlideResult]) -> int:
    """EXIT_SLIDES_FAILED (3) when any slide failed, else 0 (ok and skipped slides are successes)."""
    return EXIT_SLIDES_FAILED if any(r.status == "failed" for r in results) else 0

