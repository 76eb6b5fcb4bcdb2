"""TIFF-family slides (SVS, NDPI, OME-TIFF, generic pyramidal and strip TIFFs, Philips, QPTIFF) through
tiffslide's file handling and tifffile's decoders, tile by tile.

Tiles are read and decoded here rather than through tiffslide's zarr view so that every tile is checked:
a tile that fails to decode, or whose JPEG / JPEG 2000 stream ends before its end-of-image marker (a cut
stream decodes "fine" into grey or smeared pixels), fails the read with its level-0 position; Aperio's
JPEG 2000 with YCbCr code-streams (compression 33003) is converted to RGB as OpenSlide does; alpha is laid
on white; sparse (empty) tiles are glass. Decoded tiles are kept in a small per-slide cache, which is
also what makes untiled images cost one decode per strip and worker instead of one per tile.

`read_boxes` is the direct path behind `Slide.read_tiles`: the boxes of a whole chunk of grid tiles are cut
straight from their decoded source tiles, each source tile decoded once per call (held, band by band of tile
rows, until no box left needs it) whatever the cache holds, with the checks above on every tile.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from ...errors import SlideError
from .base import MAX_SEGMENT_BYTES, Reader, composite_on_white, damaged
from .metadata import text, tiff_pixel_size

log = logging.getLogger(__name__)

# Series names (tifffile's, from vendor metadata) and description words of images that are not the slide.
_NOT_SLIDE = ("label", "macro", "thumbnail", "overview", "map", "preview")
# Compressions whose streams end with an end-of-image (JPEG EOI) / end-of-codestream (J2K EOC) marker FFD9.
_EOI_CODECS = {7, 33003, 33005, 34712}
_YCBCR_J2K = 33003
_CACHE_BYTES = 96 * 2**20
_UNREAD = object()  # a tile read but not decoded yet


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


def pyramid_levels(series: Any) -> list[Any]:
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
            self._pages = pyramid_levels(series)
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
        self.tiles_decoded = 0  # source tiles (or strips) fetched from the file and decoded, sparse ones included

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
        self.tiles_decoded += 1
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
        """Decoded tiles `indices` of `level` (None: sparse), from the cache or read, decoded and cached."""
        out = self._lookup(level, indices)
        todo = [i for i in indices if i not in out]
        if todo:
            for i, data in self._fetch(level, todo).items():
                out[i] = self._decode(level, i, data)
            self._remember(level, {i: out[i] for i in todo}, len(indices))
        return out

    def _lookup(self, level: int, indices: list[int]) -> dict[int, np.ndarray | None]:
        """The tiles of `indices` the cache holds."""
        out: dict[int, np.ndarray | None] = {}
        with self._lock:
            for i in indices:
                if (level, i) in self._cache:
                    self._cache.move_to_end((level, i))
                    out[i] = self._cache[(level, i)]
        return out

    def _fetch(self, level: int, indices: list[int]) -> dict[int, bytes | None]:
        """The compressed bytes of tiles `indices` of `level`, read in file order."""
        page = self._pages[level]
        fh = self._tf.filehandle
        offsets = [page.dataoffsets[i] for i in indices]
        counts = [page.databytecounts[i] for i in indices]
        return {i: data for data, i in fh.read_segments(offsets, counts, indices=indices, lock=fh.lock, sort=True)}

    def _remember(self, level: int, segs: dict[int, np.ndarray | None], keep: int) -> None:
        """Cache decoded tiles, dropping the least recently used beyond the budget (never the newest `keep`)."""
        with self._lock:
            for i, seg in segs.items():
                if (level, i) in self._cache:
                    self._cache.move_to_end((level, i))
                    continue
                self._cache[(level, i)] = seg
                self._cached += 0 if seg is None else seg.nbytes
            while self._cached > _CACHE_BYTES and len(self._cache) > keep:
                _, old = self._cache.popitem(last=False)
                self._cached -= 0 if old is None else old.nbytes

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

    def read_boxes(self, level: int, x: np.ndarray, y: np.ndarray, width: np.ndarray, height: np.ndarray,
                   out: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Boxes cut from their decoded source tiles, each tile decoded once per call (see `Reader.read_boxes`).

        Boxes go by the last tile row they reach; the tiles a band of boxes needs are looked up in the cache or read
        in one batch, decoded when the first box that needs them is cut, and dropped when no box left reaches their
        row. Only the tiles of the last band go to the cache: the memory of the others is reused by the next decodes.
        """
        page = self._pages[level]
        th, tw = page.chunks[:2]
        nx = page.chunked[1]
        lw, lh = self.level_dimensions[level]
        x, y, w, h = (np.asarray(a, np.int64).ravel() for a in (x, y, width, height))
        xa, ya = np.clip(x, 0, lw), np.clip(y, 0, lh)  # the part of each box inside the level
        xb, yb = np.clip(x + w, 0, lw), np.clip(y + h, 0, lh)
        inside = (xb > xa) & (yb > ya)
        r0, r1, c0, c1 = ya // th, (yb - 1) // th, xa // tw, (xb - 1) // tw
        boxes = list(zip(*(v.tolist() for v in (x, y, w, h, xa, ya, xb, yb, r0, r1, c0, c1))))
        out_hw = None if out is None else tuple(out.shape[1:3])

        def buffer(k: int) -> np.ndarray:
            bh, bw = boxes[k][3], boxes[k][2]
            return out[k] if out_hw == (bh, bw) else np.empty((bh, bw, 3), np.uint8)

        for k in np.flatnonzero(~inside).tolist():  # wholly outside the level: glass
            buf = buffer(k)
            buf[...] = 255
            yield k, buf
        order = np.flatnonzero(inside)
        if not len(order):
            return
        order = order[np.lexsort((c0[order], r1[order]))]
        last = r1[order]
        starts = np.flatnonzero(np.r_[True, last[1:] != last[:-1]])
        ends = np.r_[starts[1:], len(order)]
        keep_from = np.minimum.accumulate(r0[order][::-1])[::-1]  # lowest tile row any box from here on reaches
        held: dict[int, np.ndarray | None] = {}  # decoded tiles some box left may need
        raw: dict[int, bytes | None] = {}  # read, decoded when the first box that needs them comes
        for s, e in zip(starts.tolist(), ends.tolist()):
            band = order[s:e]
            todo = [i for i in self._covered(band, r0, r1, c0, c1, nx) if i not in held]
            if todo:
                held.update(self._lookup(level, todo))
                raw.update(self._fetch(level, [i for i in todo if i not in held]))
            for k in band.tolist():
                bx, by, bw, bh, ax, ay, ex, ey, ra, rb, ca, cb = boxes[k]
                cuts, area = [], 0
                for r in range(ra, rb + 1):
                    sy = r * th
                    for c in range(ca, cb + 1):
                        i = r * nx + c
                        # Decoded just before it is cut (still in the CPU cache), and not cached as it comes: a
                        # call's tiles cycle through the same few rows of memory.
                        seg = held.get(i, _UNREAD)
                        if seg is _UNREAD:
                            seg = held[i] = self._decode(level, i, raw.pop(i))
                        if seg is None:  # sparse: glass
                            continue
                        sx = c * tw
                        y0, y1 = max(ay, sy), min(ey, sy + seg.shape[0])
                        x0, x1 = max(ax, sx), min(ex, sx + seg.shape[1])
                        if y0 < y1 and x0 < x1:
                            cuts.append((seg, x0, x1, y0, y1, sx, sy))
                            area += (y1 - y0) * (x1 - x0)
                buf = buffer(k)
                if area < bw * bh:  # reaches outside the level or over sparse tiles
                    buf[...] = 255
                for seg, x0, x1, y0, y1, sx, sy in cuts:
                    buf[y0 - by:y1 - by, x0 - bx:x1 - bx] = seg[y0 - sy:y1 - sy, x0 - sx:x1 - sx]
                yield k, buf
            if e < len(order):  # rows no box left reaches
                lo = int(keep_from[e]) * nx
                for i in [i for i in held if i < lo]:
                    del held[i]
        # The last band is what the next chunk of the same grid (its next tiles in row-major order) starts on.
        self._remember(level, held, 0)

    @staticmethod
    def _covered(band: np.ndarray, r0: np.ndarray, r1: np.ndarray, c0: np.ndarray, c1: np.ndarray,
                 nx: int) -> list[int]:
        """Indices of the source tiles the boxes `band` reach, each once, in file order."""
        a, b, c, d = r0[band], r1[band], c0[band], c1[band]
        rr = a[:, None, None] + np.arange(int((b - a).max()) + 1)[None, :, None]
        cc = c[:, None, None] + np.arange(int((d - c).max()) + 1)[None, None, :]
        valid = (rr <= b[:, None, None]) & (cc <= d[:, None, None])
        return np.unique((rr * nx + cc)[valid]).tolist()

    def close(self) -> None:
        self._ts.close()
