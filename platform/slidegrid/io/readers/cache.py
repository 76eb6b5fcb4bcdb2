"""A bounded local copy of remote slides for OpenSlide, which opens local files only.

A slide's files are fetched whole (an MRXS file with its data folder, a DICOM folder, a VMS/VMU index with
the images beside it) into `$SLIDEGRID_CACHE_DIR` (default `~/.cache/slidegrid/slides`), least recently
used copies are removed to keep the cache under `$SLIDEGRID_CACHE_GB` (default 50), and a slide larger
than the whole cache is refused with one line rather than filling the disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import SlideError
from ..storage import describe_storage_error, filesystem

DEFAULT_CACHE_GB = 50.0


def cache_dir() -> Path:
    """Where local copies live (`$SLIDEGRID_CACHE_DIR`, else `~/.cache/slidegrid/slides`)."""
    return Path(os.environ.get("SLIDEGRID_CACHE_DIR") or Path.home() / ".cache" / "slidegrid" / "slides")


def cache_limit() -> int:
    """Cache size limit in bytes (`$SLIDEGRID_CACHE_GB`, default 50 GB)."""
    return int(float(os.environ.get("SLIDEGRID_CACHE_GB") or DEFAULT_CACHE_GB) * 1e9)


def _slide_files(fs: Any, path: str) -> list[tuple[str, str, int]]:
    """(remote path, path relative to the copy's root, bytes) of every file the slide consists of."""
    base = path.rstrip("/")
    name = base.rsplit("/", 1)[-1]
    parent = base.rsplit("/", 1)[0] if "/" in base else ""
    if fs.isdir(base):  # a DICOM WSI folder
        return [(f, f"{name}/{f[len(base) + 1:]}", int(fs.size(f))) for f in sorted(fs.find(base))]
    files = [(base, name, int(fs.size(base)))]
    low = name.lower()
    if low.endswith(".mrxs"):
        folder = base[: -len(".mrxs")]
        if not fs.isdir(folder):
            raise SlideError(f"{fs.unstrip_protocol(base)}", "MRXS slide without its data folder "
                                                             f"{folder.rsplit('/', 1)[-1]}/ beside it; copy both")
        files += [(f, f[len(parent) + 1:] if parent else f, int(fs.size(f))) for f in sorted(fs.find(folder))]
    elif low.endswith((".vms", ".vmu")):
        stem = name.rsplit(".", 1)[0]
        files += [(f, f.rsplit("/", 1)[-1], int(fs.size(f))) for f in sorted(fs.ls(parent, detail=False))
                  if f.rsplit("/", 1)[-1].startswith(stem) and f != base]
    return files


def _entries(root: Path) -> list[tuple[float, int, Path]]:
    out = []
    for d in root.iterdir() if root.exists() else []:
        if d.is_dir() and (d / ".complete").exists():
            size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            out.append(((d / ".complete").stat().st_mtime, size, d))
    return sorted(out)


def local_copy(uri: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Local path of a remote slide's copy (fetched on first use); raises SlideError when it cannot fit."""
    fs, path = filesystem(uri, storage_options)
    try:
        files = _slide_files(fs, path)
    except SlideError:
        raise
    except Exception as exc:
        raise SlideError(uri, describe_storage_error(exc) or f"cannot list the slide's files ({exc})") from exc
    total, limit = sum(n for _, _, n in files), cache_limit()
    if total > limit:
        raise SlideError(uri, f"OpenSlide reads local files only and the slide's {total / 1e9:.1f} GB do not fit the "
                              f"local cache ({limit / 1e9:.1f} GB, $SLIDEGRID_CACHE_GB); raise the limit, or convert the "
                              "slide to a pyramidal TIFF that tiffslide streams from object storage")
    stamp = ",".join(f"{p}:{n}" for p, _, n in files)
    key = hashlib.sha256(f"{uri}|{stamp}".encode()).hexdigest()[:24]
    root = cache_dir()
    entry = root / key
    target = entry / files[0][1]
    if (entry / ".complete").exists():
        os.utime(entry / ".complete")
        return str(target)
    root.mkdir(parents=True, exist_ok=True)
    entries = _entries(root)  # oldest first
    used = sum(s for _, s, _ in entries)
    for _, size, d in entries:
        if used + total <= limit:
            break
        shutil.rmtree(d, ignore_errors=True)
        used -= size
    tmp = root / f".{key}.{os.getpid()}.{time.monotonic_ns()}"
    try:
        for remote, rel, _ in files:
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(dest))
        (tmp / ".complete").touch()
        try:
            tmp.rename(entry)
        except OSError:  # another worker finished the same copy first
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SlideError(uri, describe_storage_error(exc) or f"copying the slide for OpenSlide failed ({exc})") from exc
    return str(target)
