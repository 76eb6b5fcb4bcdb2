"""Opening slides by URI through a reader backend (tiffslide or OpenSlide), their metadata, and reads at an
exact target mpp along each axis."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from ..errors import SlideError, SlidegridError
from .readers import open_reader
from .storage import describe_storage_error, filesystem, is_remote, normalize_uri, redact

log = logging.getLogger(__name__)

# Level-0 resolutions outside this range are scanner metadata gone wrong (e.g. a TIFF whose
# resolution tags are in dots per inch of a printout), not a microscope: tiling at them would
# produce tiles of nonsense physical size, so they need an explicit override.
PLAUSIBLE_MPP = (0.05, 20.0)
# Reading a level whose downsample is within this of the wanted one counts as exact.
_EXACT = 1e-3
# Level coordinates this close to an integer are that integer (float error of x / downsample).
_SNAP = 1e-6
# Pixels of a level read at once when building a thumbnail (bounds memory on single-level slides).
_CHUNK = 4096
# x and y pixel sizes closer than this (relative) are square pixels.
_SQUARE = 1e-3


@dataclass(frozen=True)
class SlideInfo:
    """What a slide is: pyramid geometry, physical resolution and provenance.

    `level_downsamples` are the mean of the x and y factors (OpenSlide's convention); reads use each
    axis' own factor, level-0 size over level size. `mpp_source` is "metadata:<where>" (aperio, ome-xml,
    tiff-tags, philips, ventana-xmp, openslide), "override" or "missing"; `reader` the backend used.
    """

    uri: str
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp_x: float | None
    mpp_y: float | None
    mpp_source: str
    objective_power: float | None
    vendor: str | None
    file_size: int | None
    reader: str = "tiffslide"
    warnings: tuple[str, ...] = field(default=())

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for `slidegrid info --json`)."""
        d = asdict(self)
        d["level_count"] = self.level_count
        return d


def _float_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _open_error(uri: str, exc: BaseException) -> SlideError:
    """Translate the many ways opening can fail into one message with a fix."""
    if isinstance(exc, IsADirectoryError):
        return SlideError(uri, "is a directory, not a slide; pass one slide file (a folder is an archive: "
                               "list it with slidegrid.io.archive.list_archive or `slidegrid encode`)")
    reason = describe_storage_error(exc)
    if reason:
        return SlideError(uri, reason)
    return SlideError(uri, f"not a readable whole-slide image ({type(exc).__name__}: {str(exc)[:200]}); "
                           "check the file is complete and in a format tiffslide or OpenSlide supports")


def _file_size(uri: str, storage_options: Mapping[str, Any]) -> int | None:
    if is_remote(uri):
        fs, path = filesystem(uri, storage_options)
        return int(fs.size(path)) if fs.isfile(path) else None
    if os.path.isdir(uri):  # a DICOM series: its files together
        return sum(os.path.getsize(os.path.join(uri, f)) for f in os.listdir(uri)
                   if os.path.isfile(os.path.join(uri, f)))
    return os.path.getsize(uri) if os.path.isfile(uri) else None


def _weights(n_out: int, a: float, b: float, n_in: int) -> np.ndarray:
    """(n_out, n_in) resampling weights mapping input pixels [a, b) onto n_out output pixels.

    Shrinking: each output pixel is the exact area average of the input it covers (fractional pixels at
    its ends weighted by their overlap). Enlarging: bilinear at the output pixel centres.
    """
    s = (b - a) / n_out
    i = np.arange(n_in)
    if s >= 1:
        lo = a + np.arange(n_out)[:, None] * s
        return np.clip(np.minimum(lo + s, i + 1) - np.maximum(lo, i), 0, None) / s
    c = a + (np.arange(n_out) + 0.5) * s - 0.5
    i0 = np.floor(c).astype(np.int64)
    f = c - i0
    w = np.zeros((n_out, n_in))
    np.add.at(w, (np.arange(n_out), np.clip(i0, 0, n_in - 1)), 1 - f)
    np.add.at(w, (np.arange(n_out), np.clip(i0 + 1, 0, n_in - 1)), f)
    return w


def _resample(img: np.ndarray, u: tuple[float, float], v: tuple[float, float], width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 from the part [u0, u1) × [v0, v1) (pixel units, may be fractional) of `img`."""
    h, w = img.shape[:2]
    if max(abs(u[0]), abs(v[0]), abs(u[1] - w), abs(v[1] - h)) < _SNAP:  # the box is whole pixels
        if (w, h) == (width, height):
            return img
        interp = cv2.INTER_AREA if w >= width and h >= height else cv2.INTER_LINEAR
        return cv2.resize(img, (width, height), interpolation=interp)
    wy = _weights(height, v[0], v[1], h).astype(np.float32)
    wx = _weights(width, u[0], u[1], w).astype(np.float32)
    out = np.tensordot(wy, img.astype(np.float32), axes=(1, 0))  # (height, w, 3)
    out = np.tensordot(out, wx, axes=(1, 1))  # (height, 3, width)
    return np.clip(np.rint(out.transpose(0, 2, 1)), 0, 255).astype(np.uint8)


class Slide:
    """An open whole-slide image. Use `open_slide(uri)`; close it (or use `with`) when done."""

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None,
                 mpp_override: float | None = None, reader: str = "auto") -> None:
        self.uri = normalize_uri(uri)
        self._storage_options = dict(storage_options or {})
        try:
            self._reader, self._files = open_reader(self.uri, self._storage_options, reader)
        except SlidegridError:
            raise
        except Exception as exc:  # tifffile, OpenSlide, botocore and OSError all land here
            log.debug("open failed for %s with storage options %s", self.uri, redact(self._storage_options))
            raise _open_error(self.uri, exc) from exc
        try:
            w0, h0 = self._reader.level_dimensions[0]
            self._scale = tuple((w0 / w, h0 / h) for w, h in self._reader.level_dimensions)
            self.info = self._make_info(_file_size(self.uri, self._storage_options), mpp_override)
        except BaseException:
            self.close()
            raise

    def _make_info(self, size: int | None, mpp_override: float | None) -> SlideInfo:
        r = self._reader
        px = r.pixel_size
        mx, my, source, warnings = px.x, px.y, px.source, list(px.warnings)
        if mpp_override is not None:
            value = _float_or_none(mpp_override)
            if value is None or not PLAUSIBLE_MPP[0] <= value <= PLAUSIBLE_MPP[1]:
                raise SlideError(self.uri, f"--mpp-override {mpp_override!r} is not a level-0 resolution in the "
                                           f"plausible range {PLAUSIBLE_MPP} µm/px; pass the scanner's µm per pixel")
            mx = my = value
            source, warnings = "override", []
        elif mx is None or my is None:
            mx = my = None
            source = "missing"
            warnings.append("no pixel size in the metadata; pass --mpp-override (or an `mpp` column in the "
                            "cohort table)")
        elif not all(PLAUSIBLE_MPP[0] <= m <= PLAUSIBLE_MPP[1] for m in (mx, my)):
            warnings.append(f"implausible mpp {mx:.4g}×{my:.4g} µm/px in the metadata (not a microscope "
                            "resolution); pass --mpp-override with the real level-0 resolution")
        return SlideInfo(
            uri=self.uri,
            dimensions=tuple(r.level_dimensions[0]),
            level_dimensions=tuple(tuple(d) for d in r.level_dimensions),
            level_downsamples=tuple((dx + dy) / 2 for dx, dy in self._scale),
            mpp_x=mx,
            mpp_y=my,
            mpp_source=source,
            objective_power=r.objective_power,
            vendor=r.vendor,
            file_size=size,
            reader=r.name,
            warnings=tuple(warnings),
        )

    # -- resolution ---------------------------------------------------------------------------

    @property
    def mpp_xy(self) -> tuple[float, float]:
        """Level-0 µm per pixel along x and y, or a SlideError saying how to provide them."""
        i = self.info
        if i.mpp_x is None or i.mpp_y is None:
            raise SlideError(self.uri, "the slide has no pixel size in its metadata; pass --mpp-override "
                                       "(or an `mpp` column in the cohort table)")
        if i.mpp_source != "override" and any("implausible" in w for w in i.warnings):
            raise SlideError(self.uri, i.warnings[-1])
        return i.mpp_x, i.mpp_y

    @property
    def square(self) -> bool:
        """Whether pixels are square (x and y sizes within 0.1%)."""
        mx, my = self.mpp_xy
        return abs(mx - my) <= _SQUARE * max(mx, my)

    @property
    def mpp(self) -> float:
        """Level-0 µm per pixel of a slide with square pixels.

        Non-square pixels are refused here, never averaged: steps that support them (reads, thumbnails,
        tissue masks, tile grids) use `mpp_xy`.
        """
        mx, my = self.mpp_xy
        if not self.square:
            raise SlideError(self.uri, f"non-square pixels ({mx:.4g} × {my:.4g} µm/px): this step needs square "
                                       "pixels (encode, tiles, tissue and info handle them); resample the slide to "
                                       "square pixels first")
        return mx

    def level_for_scale(self, scale: float | tuple[float, float]) -> int:
        """The coarsest level whose downsample along each axis does not exceed `scale` (level-0 pixels per
        output pixel, one number or (x, y))."""
        sx, sy = (scale, scale) if isinstance(scale, (int, float)) else scale
        best = 0
        for lvl, (dx, dy) in enumerate(self._scale):
            if dx <= sx * (1 + _EXACT) and dy <= sy * (1 + _EXACT) and dx * dy >= np.prod(self._scale[best]):
                best = lvl
        return best

    def _scales(self, mpp: float) -> tuple[float, float]:
        if not _float_or_none(mpp):
            raise SlideError(self.uri, f"cannot read at mpp {mpp}; mpp must be positive")
        mx, my = self.mpp_xy
        return mpp / mx, mpp / my

    def plan_read(self, width: int, height: int, mpp: float) -> tuple[int, int, int]:
        """Level and level-pixel size (rounded) that `read_region(…, width, height, mpp)` reads."""
        if not (width >= 1 and height >= 1 and _float_or_none(mpp)):
            raise SlideError(self.uri, f"cannot read a {width}x{height} region at mpp {mpp}; width, height and "
                                       "mpp must be positive")
        sx, sy = self._scales(mpp)
        level = self.level_for_scale((sx, sy))
        dx, dy = self._scale[level]
        return level, max(1, round(width * sx / dx)), max(1, round(height * sy / dy))

    # -- reading ------------------------------------------------------------------------------

    def _read_box(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB (height, width, 3) of `level` at level pixel (x, y); outside the level is white."""
        lw, lh = self.info.level_dimensions[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, lw), min(y + height, lh)
        try:
            if (x0, y0, x1, y1) == (x, y, x + width, y + height):
                return self._reader.read(level, x, y, width, height)
            out = np.full((height, width, 3), 255, np.uint8)
            if x1 > x0 and y1 > y0:
                out[y0 - y:y1 - y, x0 - x:x1 - x] = self._reader.read(level, x0, y0, x1 - x0, y1 - y0)
            return out
        except SlideError:
            raise
        except Exception as exc:
            dx, dy = self._scale[level]
            reason = describe_storage_error(exc) or (f"{type(exc).__name__}: {str(exc)[:200]}; the file's tile "
                                                     "data may be corrupt")
            raise SlideError(self.uri, f"reading level {level} at level-0 ({round(x * dx)}, {round(y * dy)}) "
                                       f"failed: {reason}") from exc

    def read_level_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) from `level`, top-left at level-0 (x, y); outside the slide is white.

        Where (x, y) falls inside a level pixel, the level is resampled at that sub-pixel offset.
        """
        dx, dy = self._scale[level]
        return self._read_at(level, (x / dx, (x + width * dx) / dx), (y / dy, (y + height * dy) / dy), width, height)

    def _read_at(self, level: int, u: tuple[float, float], v: tuple[float, float], width: int,
                 height: int) -> np.ndarray:
        """(height, width, 3) resampled from level pixels [u0, u1) × [v0, v1)."""
        ix0, iy0 = math.floor(u[0] + _SNAP), math.floor(v[0] + _SNAP)
        ix1, iy1 = max(ix0 + 1, math.ceil(u[1] - _SNAP)), max(iy0 + 1, math.ceil(v[1] - _SNAP))
        box = self._read_box(level, ix0, iy0, ix1 - ix0, iy1 - iy0)
        return _resample(box, (u[0] - ix0, u[1] - ix0), (v[0] - iy0, v[1] - iy0), width, height)

    def read_region(self, x: int, y: int, width: int, height: int, mpp: float) -> np.ndarray:
        """RGB (height, width, 3) at exactly `mpp` µm/px along both axes whose top-left is level-0 (x, y).

        Reads the coarsest level at least as fine as the target along each axis, at that level's true
        per-axis scale (level-0 size over level size: scanners round level sizes, so downsamples are not
        exact powers of two), and resamples only the remainder: area averaging where it shrinks, bilinear
        where it enlarges. Outside the slide is white. Non-square pixels come out square in µm.
        """
        if not (width >= 1 and height >= 1):
            raise SlideError(self.uri, f"cannot read a {width}x{height} region; width and height must be positive")
        sx, sy = self._scales(mpp)
        level = self.level_for_scale((sx, sy))
        dx, dy = self._scale[level]
        return self._read_at(level, (x / dx, (x + width * sx) / dx), (y / dy, (y + height * sy) / dy), width, height)

    def read_tiles(self, x: np.ndarray, y: np.ndarray, tile_size: int, mpp: float) -> np.ndarray:
        """Tiles (N, T, T, 3) uint8 at exactly `mpp` µm/px whose top-lefts are level-0 (x[k], y[k]): the pixels of
        `read_region(x[k], y[k], T, T, mpp)` for each k (same level, per-axis scale, resampling, white outside),
        read at once.

        Where the backend decodes tiles itself (tiffslide), each compressed source tile the tiles reach is decoded
        once per call, and a tile whose box is whole level pixels of its own size (the grid at a level's own mpp,
        aligned) is cut straight from the decoded tiles, never resampled; others (OpenSlide) read tile by tile.
        """
        x = np.asarray(x).astype(np.int64, copy=False).ravel()
        y = np.asarray(y).astype(np.int64, copy=False).ravel()
        t = int(tile_size)
        if x.shape != y.shape or t < 1:
            raise SlideError(self.uri, f"cannot read {len(x)} x and {len(y)} y positions of {tile_size}-px tiles; "
                                       "pass one x and one y per tile and a positive tile size")
        sx, sy = self._scales(mpp)
        level = self.level_for_scale((sx, sy))
        dx, dy = self._scale[level]
        out = np.empty((len(x), t, t, 3), np.uint8)
        if not len(x):
            return out
        # The level-pixel box of every tile, computed as `read_region` / `_read_at` compute it.
        u0, u1, v0, v1 = x / dx, (x + t * sx) / dx, y / dy, (y + t * sy) / dy
        ix0, iy0 = np.floor(u0 + _SNAP).astype(np.int64), np.floor(v0 + _SNAP).astype(np.int64)
        ix1 = np.maximum(ix0 + 1, np.ceil(u1 - _SNAP).astype(np.int64))
        iy1 = np.maximum(iy0 + 1, np.ceil(v1 - _SNAP).astype(np.int64))
        bw, bh = ix1 - ix0, iy1 - iy0
        a0, a1, b0, b1 = u0 - ix0, u1 - ix0, v0 - iy0, v1 - iy0
        whole = np.maximum.reduce([np.abs(a0), np.abs(b0), np.abs(a1 - bw), np.abs(b1 - bh)]) < _SNAP
        exact = whole & (bw == t) & (bh == t)  # `_resample` would return the box as it is

        def finish(k: int, box: np.ndarray) -> None:
            if not exact[k]:
                out[k] = _resample(box, (float(a0[k]), float(a1[k])), (float(b0[k]), float(b1[k])), t, t)
            elif box.base is not out:  # boxes of the output's size are written into it by the backend
                out[k] = box

        boxes = self._reader.read_boxes(level, ix0, iy0, bw, bh, out=out)
        if boxes is None:  # no direct tile path: the region path, tile by tile
            for k in range(len(x)):
                finish(k, self._read_box(level, int(ix0[k]), int(iy0[k]), int(bw[k]), int(bh[k])))
            return out
        try:
            for k, box in boxes:
                finish(k, box)
        except SlideError:
            raise
        except Exception as exc:
            reason = describe_storage_error(exc) or (f"{type(exc).__name__}: {str(exc)[:200]}; the file's tile "
                                                     "data may be corrupt")
            raise SlideError(self.uri, f"reading {len(x)} tiles of level {level} from level-0 ({int(x.min())}, "
                                       f"{int(y.min())}) failed: {reason}") from exc
        return out

    def thumbnail(self, mpp: float) -> np.ndarray:
        """The whole slide at `mpp` µm/px (square pixels), from the coarsest sufficient level in bounded-memory
        chunks."""
        W, H = self.info.dimensions
        sx, sy = self._scales(mpp)
        out_w, out_h = max(1, round(W / sx)), max(1, round(H / sy))
        level = self.level_for_scale((sx, sy))
        lw, lh = self.info.level_dimensions[level]
        dx, dy = self._scale[level]
        fx, fy = dx / sx, dy / sy  # output pixels per level pixel (<= 1)
        out = np.empty((out_h, out_w, 3), np.uint8)
        for ly in range(0, lh, _CHUNK):
            for lx in range(0, lw, _CHUNK):
                cw, ch = min(_CHUNK, lw - lx), min(_CHUNK, lh - ly)
                ox0, oy0 = round(lx * fx), round(ly * fy)
                ox1, oy1 = min(out_w, round((lx + cw) * fx)), min(out_h, round((ly + ch) * fy))
                if ox1 <= ox0 or oy1 <= oy0:
                    continue
                chunk = self._read_box(level, lx, ly, cw, ch)
                out[oy0:oy1, ox0:ox1] = cv2.resize(chunk, (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_AREA)
        return out

    def close(self) -> None:
        """Release the reader and file handles."""
        self._reader.close()
        for f in self._files:
            f.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(uri: str, storage_options: Mapping[str, Any] | None = None,
               mpp_override: float | None = None, reader: str = "auto") -> Slide:
    """Open a slide by local path, file:// or any fsspec URL (s3://, gs://) with `reader` (auto, tiffslide,
    openslide); errors name the URI."""
    return Slide(uri, storage_options=storage_options, mpp_override=mpp_override, reader=reader)


@lru_cache(maxsize=8)
def open_slide_cached(uri: str, options_json: str, mpp_override: float | None = None, reader: str = "auto") -> Slide:
    """A slide kept open per worker process (storage options as JSON, hashable): Ray tasks reading a slide's
    tiles chunk by chunk reuse the handle (and its decoded-tile cache) instead of re-opening it."""
    return open_slide(uri, json.loads(options_json), mpp_override, reader)
