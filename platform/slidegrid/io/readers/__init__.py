"""Reader backends behind `slides.Slide`: tiffslide (TIFF family, local or streamed from object stores) and
OpenSlide (MRXS, SCN, BIF, VMS/VMU, DICOM WSI, and the TIFF family), chosen per file by `--reader`.

`auto` takes tiffslide where it reads the format right and OpenSlide for the formats only OpenSlide
reads, and falls back to OpenSlide when tiffslide cannot open a file. OpenSlide reads remote slides from a
bounded local copy (`readers.cache`). The backend used is recorded in `SlideInfo.reader`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError, SlideError
from ..storage import describe_storage_error, filesystem, is_remote
from .base import PixelSize, Reader

log = logging.getLogger(__name__)

READERS = ("auto", "tiffslide", "openslide")
# Formats tiffslide does not read, or reads wrong: multi-file (MRXS, VMS/VMU, DICOM folders), BIF with
# overlapping tiles, SCN with several regions on one canvas.
OPENSLIDE_ONLY = (".mrxs", ".vms", ".vmu", ".bif", ".scn", ".dcm", ".svslide")
READER_HELP = ("slide reader: auto (tiffslide for TIFF-family files, OpenSlide for MRXS/SCN/BIF/VMS/DICOM and "
               "where tiffslide cannot open a file), tiffslide or openslide")


def check_reader(reader: str) -> str:
    """`reader` if it names a backend, else a ConfigError listing them."""
    if reader not in READERS:
        raise ConfigError("--reader", f"{reader!r} is not one of {', '.join(READERS)}")
    return reader


def _wants_openslide(uri: str, local_path: str | None) -> bool:
    low = uri.lower().rstrip("/")
    return low.endswith(OPENSLIDE_ONLY) or bool(local_path and os.path.isdir(local_path))


def _tiff_pixel_size(uri: str, path: str) -> PixelSize | None:
    """The TIFF metadata reading of a file OpenSlide opens (OpenSlide assumes inches where the unit is missing
    and ignores OME-XML), so both readers agree on the pixel size of the same file; non-RGB TIFFs are refused
    as tiffslide refuses them (OpenSlide would read 16-bit data as its low byte)."""
    import tifffile

    from .metadata import tiff_pixel_size
    from .tiffslide_backend import check_rgb8, slide_series

    try:
        tf = tifffile.TiffFile(path)
    except Exception:  # not a TIFF (DICOM, MRXS, ...): OpenSlide's own properties hold the pixel size
        return None
    with tf:
        page = slide_series(tf, uri).keyframe
        check_rgb8(page, uri)
        return tiff_pixel_size(tf, page)


def _open_openslide(uri: str, storage_options: Mapping[str, Any]) -> Reader:
    from .cache import local_copy
    from .openslide_backend import OpenSlideReader

    path = local_copy(uri, storage_options) if is_remote(uri) else uri
    if os.path.isdir(path):
        dcm = sorted(f for f in os.listdir(path) if f.lower().endswith(".dcm"))
        if not dcm:
            raise SlideError(uri, "is a directory, not a slide (a folder slide must hold a DICOM WSI series of .dcm "
                                  "files); pass one slide file, or the folder as an archive to `slidegrid encode`")
        path = os.path.join(path, dcm[0])
    return OpenSlideReader(uri, path, _tiff_pixel_size(uri, path))


def _open_tiffslide(uri: str, storage_options: Mapping[str, Any], files: list[Any]) -> Reader:
    from .tiffslide_backend import TiffslideReader

    if is_remote(uri):
        fs, path = filesystem(uri, storage_options)
        size = fs.size(path)
        f = fs.open(path, "rb")
        files.append(f)
        return TiffslideReader(uri, f, size)
    return TiffslideReader(uri, uri, os.path.getsize(uri))


def open_reader(uri: str, storage_options: Mapping[str, Any] | None = None,
                reader: str = "auto") -> tuple[Reader, list[Any]]:
    """The open backend for a slide and the file objects to close with it.

    Raises SlideError (with the reasons of every backend tried) when no backend can read the slide.
    """
    check_reader(reader)
    opts = dict(storage_options or {})
    files: list[Any] = []
    if reader == "openslide" or (reader == "auto" and _wants_openslide(uri, None if is_remote(uri) else uri)):
        return _open_openslide(uri, opts), files
    if _wants_openslide(uri, None if is_remote(uri) else uri):
        raise SlideError(uri, "tiffslide reads TIFF-family files only, and this is an MRXS, SCN, BIF, VMS/VMU or "
                              "DICOM WSI slide (a folder of .dcm files): use --reader auto or openslide")
    try:
        return _open_tiffslide(uri, opts, files), files
    except SlideError:
        _close(files)
        raise
    except Exception as exc:
        _close(files)
        storage = describe_storage_error(exc)
        if storage or reader == "tiffslide":
            raise SlideError(uri, storage or f"tiffslide cannot read it ({type(exc).__name__}: {str(exc)[:160]}); "
                                             "try --reader openslide") from exc
        log.debug("tiffslide cannot open %s (%s); trying OpenSlide", uri, exc)
        try:
            return _open_openslide(uri, opts), files
        except SlideError as exc2:
            raise SlideError(uri, f"not a readable whole-slide image (tiffslide: {type(exc).__name__}: "
                                  f"{str(exc)[:120]}; OpenSlide: {exc2.reason}); check the file is complete and in "
                                  "a format tiffslide or OpenSlide supports") from exc


def _close(files: list[Any]) -> None:
    for f in files:
        f.close()
