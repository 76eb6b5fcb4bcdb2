"""Which slides of an archive a run can skip, at archive scale: the manifest plus one listing of the output
folder, and a look inside an output only where the two disagree (100,000 footer reads on S3 would take longer
than encoding a small archive)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..io.archive import SlideRecord
from ..io.manifest import SlideResult
from ..io.storage import filesystem, is_remote

# Outcomes without an output file that a re-run with the same settings reuses instead of planning again.
NO_OUTPUT = ("skipped_no_tissue", "smaller_than_tile")


def list_names(out: str, storage_options: Mapping[str, Any] | None = None) -> set[str]:
    """Names of the entries directly under `out` (one listing; empty when `out` does not exist)."""
    fs, path = filesystem(out, storage_options)
    try:
        return {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False, refresh=True)}
    except FileNotFoundError:
        return set()


def done_slides(records: list[SlideRecord], shash: str, previous: Mapping[str, Mapping[str, Any]],
                present: set[str], output_name: Callable[[str], str],
                verify: Callable[[SlideRecord], SlideResult | None] | None = None) -> dict[str, SlideResult]:
    """Slides whose outputs exist with settings hash `shash`, by slide id.

    A slide is done when its manifest row (`previous`) says ok with the same hash and its output
    (`output_name(slide_id)`) is in the listing `present`, or when the row records an outcome without output
    (no tissue, smaller than a tile) with the same hash. Where the listing has an output the manifest does not
    vouch for (a driver killed before its manifest flush, a manifest deleted), `verify` looks inside it
    (concurrently) and returns the slide's result, or None to redo it. An ok row whose output is gone is redone.
    """
    done: dict[str, SlideResult] = {}
    unsure: list[SlideRecord] = []
    for rec in records:
        prev = previous.get(rec.slide_id) or {}
        same = prev.get("settings_hash") == shash
        if same and prev.get("status") in NO_OUTPUT:
            done[rec.slide_id] = SlideResult(rec.slide_id, rec.uri, prev["status"], 0, 0.0, prev.get("error") or "",
                                             shash, reused=True)
        elif output_name(rec.slide_id) in present:
            if same and prev.get("status") == "ok":
                done[rec.slide_id] = SlideResult(rec.slide_id, rec.uri, "ok", int(prev.get("tiles") or 0), 0.0, "",
                                                 shash, reused=True)
            elif verify is not None:
                unsure.append(rec)
    if unsure:
        with ThreadPoolExecutor(16) as pool:
            for res in pool.map(verify, unsure):
                if res is not None:
                    done[res.slide_id] = res
    return done


def remove_stale_temporaries(out: str) -> int:
    """Delete the hidden `.NAME.HEX.tmp` files a killed run left in a local output folder and its slide
    folders (object stores have none: an upload is whole or absent); returns how many."""
    if is_remote(out) or not os.path.isdir(out):
        return 0
    removed = 0
    folders = [out] + [e.path for e in os.scandir(out) if e.is_dir() and not e.name.startswith(".")]
    for folder in folders:
        for e in os.scandir(folder):
            if e.name.startswith(".") and e.name.endswith(".tmp") and e.is_file():
                os.remove(e.path)
                removed += 1
    return removed
