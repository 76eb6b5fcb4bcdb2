"""TIFF-family slides (SVS, NDPI, OME-TIFF, generic pyramidal and strip TIFFs, Philips, QPTIFF) through
tiffslide's file handling and tifffile's decoders, tile by tile.

Tiles are read and decoded here rather than through tiffslide's zarr view so that every tile is checked:
a tile that fails to decode, or whose JPEG / JPEG 2000 stream ends before its end-of-image marker (a cut
stream decodes "fine" into grey or smeared pixels), fails the read with its level-0 position; Aperio's
JPEG 2000 with YCbCr code-streams (compression 33003) is converted to RGB as OpenSlide does; alpha is laid
on white; sparse (empty) tiles are glass. Decoded tiles are kept in a small per-slide cache, which is
also what makes untiled images cost one decode per strip and worker instead of one per tile.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import SlideError
from .base import MAX_SEGMENT_BYTES, Reader, composite_on_white, damaged
from .metadata import text, tiff_pixel_size

log = logging.getLogger(__name__)

# Series names (tifffile's, from vendor metadata) and description words of images that are not the slide.
_NOT_SLIDE = ("label", "macro", "thumbnail", "overview", "map", "preview")
# Compressions whose streams end with an end-of-image (JPEG EOI) / end-of-codestream (J2K EOC) marker FFD9.
_EOI_CODECS = {7, 33003, 33005, 34712}
_YCBCR_J2K = 33003
_CACHE_BYTES = 96 * 2**20


def _is_slide_series(series: Any) -> bool:
    name = (series.name or "").lower()
    if any(w in name for w in _NOT_SLIDE):
        return False
    desc = text(series.keyframe.tags.valueof(270)).lower()
    # Aperio and others name associated images in the page description ("label 387x463", "macro ...").
    first = desc.splitlines()[1] if desc.startswith("aperio") and len(desc.splitlines()) > 1 else desc[:64]
    return not any(w in first for w in ("label", "macro"))


def slide_series(tiff: Any, uri: str) -> Any:
    """The series holding the slide's pyramid: the largest one that is not a label, macro or thumbnail.

    tiffslide takes the first series, which is wrong for files that store a label or thumbnail first.
    """
    cands = [s for s in tiff.series if s.keyframe is not None and _is_slide_series(s)]
    if not cands:
        raise SlideError(uri, "the file holds no slide image (only label/macro/thumbnail images)")
    return max(cands, key=lambda s: s.keyframe.imagewidth * s.keyframe.imagelength)


def check_rgb8(page: Any, uri: str) -> None:
    """Refuse a level-0 page that is not 8-bit RGB(A): grayscale has no stain colour for the tissue mask or
    the encoders (HSV saturation is 0 everywhere), and 16-bit data read as 8-bit is noise."""
    spp = page.samplesperpixel
    if page.dtype != np.uint8 or spp not in (3, 4):
        raise SlideError(uri, f"not a brightfield RGB slide ({spp} channel(s) of {page.dtype}); "
                              "slidegrid reads 8-bit RGB(A) slides such as H&E")


def _levels(series: Any) -> list[Any]:
    """Level keyframes with strictly decreasing size (writers sometimes append unrelated pages)."""
    out = []
    for lvl in series.levels:
        page = lvl.keyframe
        if out and not (page.imagewidth < out[-1].imagewidth or page.imagelength < out[-1].imagelength):
            continue
        if out and page.samplesperpixel != out[0].samplesperpixel:
            continue
        out.append(page)
    return out


def _ycbcr_to_rgb(seg: np.ndarray) -> np.ndarray:
    """Full-range (JFIF) YCbCr to RGB, the conversion OpenSlide applies to Aperio 33003 tiles."""
    y = seg[..., 0].astype(np.float32)
    cb, cr = seg[..., 1].astype(np.float32) - 128, seg[..., 2].astype(np.float32) - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


class TiffslideReader(Reader):
    """A TIFF-family slide opened with tiffslide (local path or fsspec file object)."""

    name = "tiffslide"

    def __init__(self, uri: str, source: Any, size: int) -> None:
        import tiffslide

        self.uri = uri
        self._ts = tiffslide.TiffSlide(source)
        try:
            self._tf = self._ts.ts_tifffile
            series = slide_series(self._tf, uri)
            self._pages = _levels(series)
            self._check(series, size)
            page0 = self._pages[0]
            self.level_dimensions = tuple((p.imagewidth, p.imagelength) for p in self._pages)
            self._scale = [(self.level_dimensions[0][0] / w, self.level_dimensions[0][1] / h)
                           for w, h in self.level_dimensions]
            self.pixel_size = tiff_pixel_size(self._tf, page0)
            self.properties = self._properties()
            desc = text(page0.tags.valueof(270))
            self.vendor = self.properties.get("tiffslide.vendor") or ("aperio" if desc.startswith("Aperio") else None)
            m = re.search(r"AppMag\s*=\s*([0-9.]+)", desc)
            power = self.properties.get("tiffslide.objective-power") or (m.group(1) if m else None)
            self.objective_power = float(power) if power else None
        except BaseException:
            self.close()
            raise
        self._cache: OrderedDict[tuple[int, int], np.ndarray | None] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    def _properties(self) -> dict[str, Any]:
        try:
            return dict(self._ts.properties)
        except Exception as exc:  # e.g. a description tiffslide cannot decode: our own parser read it already
            log.debug("tiffslide properties of %s unavailable: %s", self.uri, exc)
            return {}

    def _check(self, series: Any, size: int) -> None:
        """Refuse what would otherwise read as garbage: truncated files, non-RGB data, huge strips."""
        end = max((o + n for page in self._pages for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
        if end > size:
            # A cut-off copy decodes its surviving tiles fine and the rest as errors or grey, so say so up front.
            raise SlideError(self.uri, f"the file is truncated ({size} bytes, but its image data extends to {end}); "
                                       "copy or download it again")
        page = self._pages[0]
        check_rgb8(page, self.uri)
        if page.planarconfig != 1:
            raise SlideError(self.uri, "colour planes are stored separately (PlanarConfiguration 2); convert it to a "
                                       "tiled pyramidal TIFF with interleaved RGB (e.g. `vips tiffsave --tile --pyramid`)")
        for p in self._pages:
            seg = int(np.prod(p.chunks)) * p.dtype.itemsize
            if seg > MAX_SEGMENT_BYTES:
                raise SlideError(self.uri, f"an untiled image whose strips decode to {seg / 2**20:.0f} MiB each (limit "
                                           f"{MAX_SEGMENT_BYTES // 2**20} MiB); convert it to a tiled pyramidal TIFF "
                                           "(e.g. `vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg`)")

    def _decode(self, level: int, index: int, data: bytes | None) -> np.ndarray | None:
        page = self._pages[level]
        th, tw = page.chunks[:2]
        ny, nx = page.chunked[:2]
        r, c = divmod(index, nx)
        pos0 = (round(c * tw * self._scale[level][0]), round(r * th * self._scale[level][1]))
        if data is None or not len(data):
            return None  # a sparse tile: no data is glass
        if (page.compression in _EOI_CODECS and not page.jpegheader
                and not data.rstrip(b"\0").endswith(b"\xff\xd9")):
            raise damaged(self.uri, level, pos0, f"its {len(data)}-byte compressed tile ends before the end-of-image "
                                                 "marker (cut short)")
        try:
            seg = page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)[0]
        except Exception as exc:
            raise damaged(self.uri, level, pos0, f"{type(exc).__name__}: {str(exc)[:160]}") from exc
        if seg is None:
            raise damaged(self.uri, level, pos0, "the decoder returned nothing")
        seg = np.asarray(seg).reshape(seg.shape[-3:])
        if page.compression == _YCBCR_J2K:
            seg = _ycbcr_to_rgb(seg)
        if seg.shape[-1] == 4:
            seg = composite_on_white(seg, premultiplied=1 in tuple(page.extrasamples or ()))
        return np.ascontiguousarray(seg[..., :3])

    def _segments(self, level: int, indices: list[int]) -> dict[int, np.ndarray | None]:
        out: dict[int, np.ndarray | None] = {}
        with self._lock:
            for i in indices:
                if (level, i) in self._cache:
                    self._cache.move_to_end((level, i))
                    out[i] = self._cache[(level, i)]
        todo = [i for i in indices if i not in out]
        if todo:
            page = self._pages[level]
            fh = self._tf.filehandle
            offsets = [page.dataoffsets[i] for i in todo]
            counts = [page.databytecounts[i] for i in todo]
            for data, i in fh.read_segments(offsets, counts, indices=todo, lock=fh.lock, sort=True):
                out[i] = self._decode(level, i, data)
            with self._lock:
                for i in todo:
                    seg = out[i]
                    self._cache[(level, i)] = seg
                    self._cached += 0 if seg is None else seg.nbytes
                while self._cached > _CACHE_BYTES and len(self._cache) > len(indices):
                    _, old = self._cache.popitem(last=False)
                    self._cached -= 0 if old is None else old.nbytes
        return out

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        page = self._pages[level]
        th, tw = page.chunks[:2]
        nx = page.chunked[1]
        r0, r1, c0, c1 = y // th, (y + height - 1) // th, x // tw, (x + width - 1) // tw
        want = [r * nx + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
        segs = self._segments(level, want)
        out = np.full((height, width, 3), 255, np.uint8)
        for i in want:
            seg = segs[i]
            if seg is None:
                continue
            r, c = divmod(i, nx)
            sy, sx = r * th, c * tw
            ya, yb = max(y, sy), min(y + height, sy + seg.shape[0])
            xa, xb = max(x, sx), min(x + width, sx + seg.shape[1])
            if ya < yb and xa < xb:
                out[ya - y:yb - y, xa - x:xb - x] = seg[ya - sy:yb - sy, xa - sx:xb - sx]
        return out

    def close(self) -> None:
        self._ts.close()
