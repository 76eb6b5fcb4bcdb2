"""Tile grids at a target mpp whose cells keep their (row, col) arrangement (NIC §2, RAN), concentric
multi-resolution tiles (MRN, papers/mrn-multi-resolution-unet.txt), random coordinate perturbation and
class-balanced patch sampling (papers/digipathai-ensemble-segmentation-framework.txt, "Patch coordinate
extraction" and "Data augmentation").
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .errors import ConfigError
from .tissue import TissueMask

if TYPE_CHECKING:
    from .slides import Slide

# Float slack when testing that a tile ends inside the slide (level-0 px).
_EPS = 1e-6


@dataclass(frozen=True)
class GridSpec:
    """Grid geometry: tile side and step in pixels at `mpp`, and the tissue fraction a tile needs."""

    mpp: float = 0.5
    tile_size: int = 224
    stride: int | None = None
    min_tissue: float = 0.25

    def __post_init__(self) -> None:
        if not 0.05 <= self.mpp <= 1000:
            raise ConfigError("--mpp", f"{self.mpp} µm/px is outside 0.05..1000")
        if self.tile_size < 1:
            raise ConfigError("--tile-size", "must be a positive number of pixels")
        if self.stride is not None and self.stride < 1:
            raise ConfigError("--stride", "must be a positive number of pixels (or leave it out for no overlap)")
        if not 0 <= self.min_tissue <= 1:
            raise ConfigError("--min-tissue", "must be within 0..1")

    @property
    def step(self) -> int:
        """Distance between neighbouring tiles in pixels at `mpp` (stride, default the tile size)."""
        return self.stride or self.tile_size


@dataclass
class TileGrid:
    """The kept tiles of a slide's grid with their grid index, level-0 top-left and tissue fraction."""

    spec: GridSpec
    slide_mpp: float
    dimensions: tuple[int, int]
    shape: tuple[int, int]
    row: np.ndarray
    col: np.ndarray
    x: np.ndarray
    y: np.ndarray
    tissue: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    @property
    def tile_size_level0(self) -> float:
        """Tile side in level-0 pixels."""
        return self.spec.tile_size * self.spec.mpp / self.slide_mpp

    def to_table(self, source_uri: str | None = None) -> pa.Table:
        """The kept tiles as an Arrow table, with the grid geometry as JSON metadata under `slidegrid`."""
        table = pa.table({"row": pa.array(self.row, pa.int32()), "col": pa.array(self.col, pa.int32()),
                          "x": pa.array(self.x, pa.int64()), "y": pa.array(self.y, pa.int64()),
                          "tissue": pa.array(self.tissue, pa.float32())})
        meta = {"source_uri": source_uri, "slide_mpp": self.slide_mpp, "target_mpp": self.spec.mpp,
                "tile_size": self.spec.tile_size, "stride": self.spec.step, "min_tissue": self.spec.min_tissue,
                "grid_shape": list(self.shape), "slide_dimensions": list(self.dimensions),
                "spec": asdict(self.spec)}
        return table.replace_schema_metadata({b"slidegrid": json.dumps(meta).encode()})


def _integral(mask: np.ndarray) -> np.ndarray:
    """Summed-area table with a zero first row and column."""
    dtype = np.int32 if mask.size < 2**31 else np.int64
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype)
    out[1:, 1:] = mask
    # In place over the whole contiguous table (the zero border sums to zero): no temporaries.
    np.cumsum(out, axis=0, out=out)
    np.cumsum(out, axis=1, out=out)
    return out


def _box_mean(mask: np.ndarray, u0: np.ndarray, v0: np.ndarray, u1: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """Area-weighted mean of `mask` over boxes in continuous pixel units (outside the mask counts as 0).

    Exact: inside each pixel the integral of a piecewise-constant image is bilinear, so bilinear
    interpolation of the summed-area table at the box corners gives the true covered area.
    """
    h, w = mask.shape
    if h == 0 or w == 0:
        return np.zeros(len(u0))
    table = _integral(mask)

    def at(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        u, v = np.clip(u, 0, w), np.clip(v, 0, h)
        c, r = np.minimum(u.astype(np.int64), w - 1), np.minimum(v.astype(np.int64), h - 1)
        a, b = u - c, v - r
        return (table[r, c] * (1 - a) * (1 - b) + table[r, c + 1] * a * (1 - b)
                + table[r + 1, c] * (1 - a) * b + table[r + 1, c + 1] * a * b)

    area = np.maximum((u1 - u0) * (v1 - v0), 1e-12)
    return (at(u1, v1) - at(u0, v1) - at(u1, v0) + at(u0, v0)) / area


def _grid_positions(extent: int, size0: float, step: int, scale: float) -> np.ndarray:
    """Level-0 starts round(i * step * scale) of every complete tile along one axis of `extent` pixels."""
    if extent + _EPS < size0:
        return np.zeros(0, np.int64)
    n_max = int((extent - size0) / (step * scale)) + 2
    pos = np.round(np.arange(n_max) * step * scale).astype(np.int64)
    return pos[pos + size0 <= extent + _EPS]


def tissue_fraction(tissue: TissueMask, x: np.ndarray, y: np.ndarray, size0: float,
                    slide_mpp: float) -> np.ndarray:
    """Exact tissue fraction under squares of side `size0` level-0 px whose top-lefts are level-0 (x, y)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    f = slide_mpp / tissue.mpp  # mask px per level-0 px
    return _box_mean(tissue.mask, x * f, y * f, (x + size0) * f, (y + size0) * f)


def tile_grid(dimensions: tuple[int, int], slide_mpp: float, spec: GridSpec,
              tissue: TissueMask | None = None) -> TileGrid:
    """Every complete tile of the grid with at least `spec.min_tissue` tissue (every tile when `tissue` is None).

    Tile (row, col) starts at level-0 x = round(col * step * mpp / slide_mpp), y likewise; the tissue fraction
    is the exact covered area of the mask under the tile, from one summed-area table (no loop over tiles).
    """
    W, H = int(dimensions[0]), int(dimensions[1])
    scale = spec.mpp / slide_mpp  # level-0 px per target px
    size0 = spec.tile_size * scale
    xs, ys = _grid_positions(W, size0, spec.step, scale), _grid_positions(H, size0, spec.step, scale)
    rr, cc = (a.ravel() for a in np.meshgrid(np.arange(len(ys)), np.arange(len(xs)), indexing="ij"))
    x, y = xs[cc], ys[rr]
    if tissue is None:
        frac, keep = np.ones(len(x)), np.ones(len(x), bool)
    else:
        frac = tissue_fraction(tissue, x, y, size0, slide_mpp)
        keep = frac >= spec.min_tissue - _EPS  # a tile exactly at the threshold stays despite float error
    return TileGrid(spec=spec, slide_mpp=slide_mpp, dimensions=(W, H), shape=(len(ys), len(xs)),
                    row=rr[keep].astype(np.int32), col=cc[keep].astype(np.int32), x=x[keep], y=y[keep],
                    tissue=frac[keep].astype(np.float32))


def concentric_tiles(center_x: float, center_y: float, mpps: Sequence[float], size: int,
                     slide_mpp: float) -> list[tuple[int, int, float]]:
    """Level-0 top-left and mpp of `size`-px tiles sharing one centre, one per mpp (MRN: 0.5/1/2/4 µm/px)."""
    out = []
    for mpp in mpps:
        half0 = size * mpp / slide_mpp / 2
        out.append((int(round(center_x - half0)), int(round(center_y - half0)), float(mpp)))
    return out


def read_concentric(slide: Slide, center_x: float, center_y: float, mpps: Sequence[float],
                    size: int) -> np.ndarray:
    """(len(mpps), size, size, 3) concentric tiles read at their exact mpp; outside the slide is white."""
    return np.stack([slide.read_region(x, y, size, size, mpp)
                     for x, y, mpp in concentric_tiles(center_x, center_y, mpps, size, slide.mpp)])


def perturb(x: np.ndarray, y: np.ndarray, radius: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shift points uniformly within a disc of `radius` level-0 px (DigiPathAI "random coordinate perturbation",
    radius 128)."""
    x, y = np.asarray(x), np.asarray(y)
    r = radius * np.sqrt(rng.random(x.shape))  # sqrt: uniform over the disc's area, not its radius
    t = rng.random(x.shape) * 2 * np.pi
    return np.round(x + r * np.cos(t)).astype(np.int64), np.round(y + r * np.sin(t)).astype(np.int64)


def _window_sums(table: np.ndarray, before: int, after: int) -> np.ndarray:
    """For every pixel (r, c): the mask sum over rows r-before..r+after and the same columns (clipped)."""
    h, w = table.shape[0] - 1, table.shape[1] - 1
    r0 = np.clip(np.arange(h) - before, 0, h)[:, None]
    r1 = np.clip(np.arange(h) + after + 1, 0, h)[:, None]
    c0 = np.clip(np.arange(w) - before, 0, w)[None, :]
    c1 = np.clip(np.arange(w) + after + 1, 0, w)[None, :]
    return table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]


def _start_ranges(n: int, f: float, offset: float, last: int) -> tuple[np.ndarray, np.ndarray]:
    """Per mask pixel j < n along one axis: the inclusive range (lo, hi) of integer level-0 starts s with
    s + offset inside the pixel ([j f, (j+1) f)) and 0 <= s <= last; empty where lo > hi."""
    j = np.arange(n)
    lo = np.maximum(np.ceil(j * f - offset - _EPS), 0).astype(np.int64)
    hi = np.minimum(np.ceil((j + 1) * f - offset - _EPS) - 1, last).astype(np.int64)
    return lo, hi


def _sample_starts(candidates: np.ndarray, count: int, rows: tuple[np.ndarray, np.ndarray],
                   cols: tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 (x, y) starts: `count` candidate pixels with room for a start, then a start within each."""
    (r_lo, r_hi), (c_lo, c_hi) = rows, cols
    flat = np.flatnonzero(candidates & np.outer(r_lo <= r_hi, c_lo <= c_hi))
    if count == 0 or not len(flat):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    r, c = np.divmod(flat[rng.integers(len(flat), size=count)], candidates.shape[1])
    return (c_lo[c] + (rng.random(count) * (c_hi[c] - c_lo[c] + 1)).astype(np.int64),
            r_lo[r] + (rng.random(count) * (r_hi[r] - r_lo[r] + 1)).astype(np.int64))


def sample_patches(label_mask: np.ndarray, mask_mpp: float, tissue: TissueMask, slide_mpp: float,
                   dimensions: tuple[int, int], n: int, patch_size: int, mpp: float, rng: np.random.Generator,
                   positive_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level-0 top-lefts of training patches, tumour ones first (DigiPathAI "Patch coordinate extraction").

    round(n * positive_fraction) patches touch tumour (a patch is tumour if ANY label pixel inside it is set)
    and the rest are tumour-free patches centred on tissue; all n are negatives when there is no tumour. Every
    patch lies inside the slide. Candidate positions are chosen per mask pixel with bounds that hold wherever in
    the pixel the patch starts, and `is_tumour` is then computed exactly; a class with no room gets no patches.
    """
    if n < 0 or patch_size < 1 or not 0 <= positive_fraction <= 1:
        raise ConfigError("sample_patches", "n must be >= 0, patch_size >= 1 and positive_fraction within 0..1")
    W, H = dimensions
    size0 = patch_size * mpp / slide_mpp  # patch side in level-0 px
    last_x, last_y = math.floor(W - size0 + _EPS), math.floor(H - size0 + _EPS)
    if last_x < 0 or last_y < 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    label = np.asarray(label_mask, bool)
    h, w = label.shape
    f = mask_mpp / slide_mpp  # level-0 px per mask px
    s = size0 / f  # patch side in mask px
    table = _integral(label)

    # Tumour: a patch starting anywhere in pixel j covers at least pixels j..j+ceil(s)-1.
    touches = _window_sums(table, 0, max(1, math.ceil(s - _EPS)) - 1) > 0
    px, py = _sample_starts(touches, int(round(n * positive_fraction)), _start_ranges(h, f, 0, last_y),
                            _start_ranges(w, f, 0, last_x), rng)
    n_pos = len(px)  # 0 when there is no tumour (or none with room for a patch inside the slide)

    # Non-tumour: a patch centred anywhere in pixel c covers at most pixels c-half..c+half, so these must all
    # be free of tumour; the centre pixel must be tissue.
    half = math.ceil(s / 2 - _EPS)
    free = _window_sums(table, half, half) == 0
    tr = np.clip(((np.arange(h) + 0.5) * mask_mpp / tissue.mpp).astype(np.int64), 0, tissue.mask.shape[0] - 1)
    tc = np.clip(((np.arange(w) + 0.5) * mask_mpp / tissue.mpp).astype(np.int64), 0, tissue.mask.shape[1] - 1)
    on_tissue = tissue.mask[np.ix_(tr, tc)] if tissue.mask.size else np.zeros((h, w), bool)
    nx, ny = _sample_starts(free & on_tissue, n - n_pos, _start_ranges(h, f, size0 / 2, last_y),
                            _start_ranges(w, f, size0 / 2, last_x), rng)

    x, y = np.concatenate([px, nx]), np.concatenate([py, ny])
    # Exact "any pixel" rule: label pixels j with j f < x0 + size0 and (j + 1) f > x0.
    c0, c1 = np.clip(np.floor(x / f), 0, w).astype(np.int64), np.clip(np.ceil((x + size0) / f), 0, w).astype(np.int64)
    r0, r1 = np.clip(np.floor(y / f), 0, h).astype(np.int64), np.clip(np.ceil((y + size0) / f), 0, h).astype(np.int64)
    is_tumour = (table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]) > 0
    return x, y, is_tumour
