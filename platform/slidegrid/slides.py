"""Opening slides by URI with tiffslide over fsspec, their metadata, and reads at an exact target mpp."""

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

from .errors import SlideError
from .storage import describe_storage_error, filesystem, is_remote, normalize_uri, redact

log = logging.getLogger(__name__)

# Level-0 resolutions outside this range are scanner metadata gone wrong (e.g. a TIFF whose
# resolution tags are in dots per inch of a printout), not a microscope: tiling at them would
# produce tiles of nonsense physical size, so they need an explicit override.
PLAUSIBLE_MPP = (0.05, 20.0)
# Reading a level whose downsample is within this of the wanted one counts as exact.
_EXACT = 1e-3
# Pixels of a level read at once when building a thumbnail (bounds memory on single-level slides).
_CHUNK = 4096


@dataclass(frozen=True)
class SlideInfo:
    """What a slide is: pyramid geometry, physical resolution and provenance."""

    uri: str
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp_x: float | None
    mpp_y: float | None
    mpp_source: str  # "metadata", "override" or "missing"
    objective_power: float | None
    vendor: str | None
    file_size: int | None
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
                               "list it with slidegrid.archive.list_archive or `slidegrid encode`)")
    reason = describe_storage_error(exc)
    if reason:
        return SlideError(uri, reason)
    return SlideError(uri, f"not a readable pyramidal TIFF/SVS slide ({type(exc).__name__}: {str(exc)[:200]}); "
                           "check the file is complete and in a format tiffslide supports")


class Slide:
    """An open whole-slide image. Use `open_slide(uri)`; close it (or use `with`) when done."""

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None,
                 mpp_override: float | None = None) -> None:
        import tiffslide

        self.uri = normalize_uri(uri)
        self._storage_options = dict(storage_options or {})
        try:
            if is_remote(self.uri):
                fs, path = filesystem(self.uri, self._storage_options)
                size = fs.size(path)
                self._file = fs.open(path, "rb")
                self._ts = tiffslide.TiffSlide(self._file)
            else:
                size = os.path.getsize(self.uri)
                self._file = None
                self._ts = tiffslide.TiffSlide(self.uri)
        except Exception as exc:  # tifffile, zarr, botocore and OSError all land here
            log.debug("open failed for %s with storage options %s", self.uri, redact(self._storage_options))
            raise _open_error(self.uri, exc) from exc
        try:
            self._check_pixels(size)
            self.info = self._make_info(size, mpp_override)
        except BaseException:
            self.close()
            raise

    def _check_pixels(self, size: int) -> None:
        """Refuse what would otherwise read as garbage: truncated files and non-RGB images."""
        series = self._ts.ts_tifffile.series[0]
        end = max((o + n for lvl in series.levels for page in lvl.pages if page is not None
                   for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
        if end > size:
            # A cut-off copy decodes its surviving tiles fine and the rest as errors or grey, so say so up front.
            raise SlideError(self.uri, f"the file is truncated ({size} bytes, but its image data extends to {end}); "
                                       "copy or download it again")
        spp = series.keyframe.samplesperpixel
        if series.dtype != np.uint8 or spp not in (3, 4):
            raise SlideError(self.uri, f"not a brightfield RGB slide ({spp} channel(s) of {series.dtype}); "
                                       "slidegrid reads 8-bit RGB(A) slides such as H&E")

    def _make_info(self, size: int | None, mpp_override: float | None) -> SlideInfo:
        props = self._ts.properties
        mx = _float_or_none(props.get("tiffslide.mpp-x"))
        my = _float_or_none(props.get("tiffslide.mpp-y"))
        warnings: list[str] = []
        source = "metadata"
        if mpp_override is not None:
            value = _float_or_none(mpp_override)
            if value is None or not PLAUSIBLE_MPP[0] <= value <= PLAUSIBLE_MPP[1]:
                raise SlideError(self.uri, f"--mpp-override {mpp_override!r} is not a level-0 resolution in the "
                                           f"plausible range {PLAUSIBLE_MPP} µm/px; pass the scanner's µm per pixel")
            mx = my = value
            source = "override"
        elif mx is None and my is None:
            source = "missing"
            warnings.append("no mpp in the metadata; pass --mpp-override (or an `mpp` column in the cohort table)")
        else:
            mx, my = mx or my, my or mx
            if not all(PLAUSIBLE_MPP[0] <= m <= PLAUSIBLE_MPP[1] for m in (mx, my)):
                warnings.append(f"implausible mpp {mx:.4g}×{my:.4g} µm/px in the metadata (not a microscope "
                                "resolution); pass --mpp-override with the real level-0 resolution")
        return SlideInfo(
            uri=self.uri,
            dimensions=tuple(self._ts.dimensions),
            level_dimensions=tuple(tuple(d) for d in self._ts.level_dimensions),
            level_downsamples=tuple(float(d) for d in self._ts.level_downsamples),
            mpp_x=mx,
            mpp_y=my,
            mpp_source=source,
            objective_power=_float_or_none(props.get("tiffslide.objective-power")),
            vendor=props.get("tiffslide.vendor"),
            file_size=size,
            warnings=tuple(warnings),
        )

    # -- resolution ---------------------------------------------------------------------------

    @property
    def mpp(self) -> float:
        """Level-0 µm per pixel, or a SlideError saying how to provide it."""
        i = self.info
        if i.mpp_x is None:
            raise SlideError(self.uri, "the slide has no mpp in its metadata; pass --mpp-override "
                                       "(or an `mpp` column in the cohort table)")
        if i.mpp_source == "metadata" and i.warnings:
            raise SlideError(self.uri, i.warnings[-1])
        # Square pixels are the norm; where x and y differ, the mean keeps tiles the right area.
        return (i.mpp_x + i.mpp_y) / 2

    def level_for_scale(self, scale: float) -> int:
        """The level with the largest downsample not exceeding `scale` (level-0 pixels per output pixel)."""
        best = 0
        for lvl, d in enumerate(self.info.level_downsamples):
            if d <= scale * (1 + _EXACT):
                best = lvl if d >= self.info.level_downsamples[best] else best
        return best

    def plan_read(self, width: int, height: int, mpp: float) -> tuple[int, int, int]:
        """Level and level-pixel size to read so that resampling to (width, height) at `mpp` is minimal."""
        if not (width >= 1 and height >= 1 and _float_or_none(mpp)):
            raise SlideError(self.uri, f"cannot read a {width}x{height} region at mpp {mpp}; width, height and "
                                       "mpp must be positive")
        scale = mpp / self.mpp
        level = self.level_for_scale(scale)
        d = self.info.level_downsamples[level]
        return level, max(1, round(width * scale / d)), max(1, round(height * scale / d))

    # -- reading ------------------------------------------------------------------------------

    def read_level_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) from `level`, top-left at level-0 (x, y); outside the slide is white."""
        W, H = self.info.dimensions
        d = self.info.level_downsamples[level]
        try:
            # Fast path: entirely inside the slide, no padding copy.
            if x >= 0 and y >= 0 and x + width * d <= W and y + height * d <= H:
                arr = self._ts.read_region((int(x), int(y)), level, (int(width), int(height)), as_array=True)
                return np.ascontiguousarray(arr[..., :3])
            return self._read_padded(x, y, level, width, height)
        except SlideError:
            raise
        except Exception as exc:
            reason = describe_storage_error(exc) or (f"{type(exc).__name__}: {str(exc)[:200]}; the file's tile "
                                                     "data may be corrupt")
            raise SlideError(self.uri, f"reading level {level} at ({x}, {y}) failed: {reason}") from exc

    def _read_padded(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        out = np.full((height, width, 3), 255, np.uint8)
        lw, lh = self.info.level_dimensions[level]
        d = self.info.level_downsamples[level]
        lx, ly = math.floor(x / d), math.floor(y / d)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + width, lw), min(ly + height, lh)
        if x1 <= x0 or y1 <= y0:
            return out
        arr = self._ts.read_region((round(x0 * d), round(y0 * d)), level, (x1 - x0, y1 - y0), as_array=True)
        out[y0 - ly:y1 - ly, x0 - lx:x1 - lx] = arr[: y1 - y0, : x1 - x0, :3]
        return out

    def read_region(self, x: int, y: int, width: int, height: int, mpp: float) -> np.ndarray:
        """RGB (height, width, 3) at exactly `mpp` µm/px whose top-left is level-0 (x, y).

        Reads the pyramid level closest above the target resolution and resamples only the
        remainder (area interpolation), so a tile always covers width×mpp µm whatever the pyramid.
        """
        level, lw, lh = self.plan_read(width, height, mpp)
        region = self.read_level_region(x, y, level, lw, lh)
        if (lw, lh) == (width, height):
            return region
        interp = cv2.INTER_AREA if lw >= width else cv2.INTER_LINEAR
        return cv2.resize(region, (width, height), interpolation=interp)

    def thumbnail(self, mpp: float) -> np.ndarray:
        """The whole slide at `mpp` µm/px, read from the smallest sufficient level in bounded-memory chunks."""
        W, H = self.info.dimensions
        scale = mpp / self.mpp
        out_w, out_h = max(1, round(W / scale)), max(1, round(H / scale))
        level = self.level_for_scale(scale)
        lw, lh = self.info.level_dimensions[level]
        d = self.info.level_downsamples[level]
        out = np.empty((out_h, out_w, 3), np.uint8)
        f = d / scale  # output pixels per level pixel (<= 1)
        for ly in range(0, lh, _CHUNK):
            for lx in range(0, lw, _CHUNK):
                cw, ch = min(_CHUNK, lw - lx), min(_CHUNK, lh - ly)
                ox0, oy0 = round(lx * f), round(ly * f)
                ox1, oy1 = min(out_w, round((lx + cw) * f)), min(out_h, round((ly + ch) * f))
                if ox1 <= ox0 or oy1 <= oy0:
                    continue
                chunk = self.read_level_region(round(lx * d), round(ly * d), level, cw, ch)
                out[oy0:oy1, ox0:ox1] = cv2.resize(chunk, (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_AREA)
        return out

    def close(self) -> None:
        """Release the file handle."""
        self._ts.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(uri: str, storage_options: Mapping[str, Any] | None = None,
               mpp_override: float | None = None) -> Slide:
    """Open a slide by local path, file:// or any fsspec URL (s3://, gs://); errors name the URI."""
    return Slide(uri, storage_options=storage_options, mpp_override=mpp_override)


@lru_cache(maxsize=8)
def open_slide_cached(uri: str, options_json: str, mpp_override: float | None = None) -> Slide:
    """A slide kept open per worker process (storage options as JSON, hashable): Ray tasks reading a slide's
    tiles chunk by chunk reuse the handle instead of re-opening it."""
    return open_slide(uri, json.loads(options_json), mpp_override)
