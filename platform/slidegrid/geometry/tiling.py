"""Tile grids at a target mpp whose cells keep their (row, col) arrangement (NIC §2, RAN), concentric
multi-resolution tiles (MRN, papers/mrn-multi-resolution-unet.txt), random coordinate perturbation and
class-balanced patch sampling (papers/digipathai-ensemble-segmentation-framework.txt, "Patch coordinate
extraction" and "Data augmentation").
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from .tissue import TissueMask

if TYPE_CHECKING:
    from ..io.slides import Slide

# Float slack when testing that a tile ends inside the slide (level-0 px).
_EPS = 1e-6


def _pair(value: float | Sequence[float], what: str) -> tuple[float, float]:
    """(x, y) from one number (the same along both axes) or a pair; ConfigError naming `what` unless both are
    finite and positive."""
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                 and math.isfinite(v) and v > 0 for v in pair):
        raise ConfigError(what, f"{value!r} is not a positive number (or an (x, y) pair of them)")
    return float(pair[0]), float(pair[1])


def as_mpp_xy(slide_mpp: float | Sequence[float]) -> tuple[float, float]:
    """(mpp_x, mpp_y): level-0 µm per pixel along x and y, from one number (square pixels) or an (x, y) pair.

    Raises ConfigError unless both are finite and positive.
    """
    return _pair(slide_mpp, "slide mpp")


# The grid geometry when none is chosen (`encode` with a foundation-model preset: the preset's native one).
DEFAULT_MPP = 0.5
DEFAULT_TILE_SIZE = 224


@dataclass(frozen=True)
class GridSpec:
    """Grid geometry: tile side and step in pixels at `mpp`, and the tissue fraction a tile needs.

    `mpp` / `tile_size` None: not chosen, so the context's default applies (`resolved`): DEFAULT_MPP and
    DEFAULT_TILE_SIZE in `tile_grid`, a foundation-model preset's native geometry in `EncodeConfig`.
    """

    mpp: float | None = None
    tile_size: int | None = None
    stride: int | None = None
    min_tissue: float = 0.25

    def __post_init__(self) -> None:
        if self.mpp is not None and not 0.05 <= self.mpp <= 1000:
            raise ConfigError("--mpp", f"{self.mpp} µm/px is outside 0.05..1000")
        if self.tile_size is not None and self.tile_size < 1:
            raise ConfigError("--tile-size", "must be a positive number of pixels")
        if self.stride is not None and self.stride < 1:
            raise ConfigError("--stride", "must be a positive number of pixels (or leave it out for no overlap)")
        if not 0 <= self.min_tissue <= 1:
            raise ConfigError("--min-tissue", "must be within 0..1")

    def resolved(self, mpp: float = DEFAULT_MPP, tile_size: int = DEFAULT_TILE_SIZE) -> GridSpec:
        """This geometry with an unchosen mpp / tile size set to the given ones."""
        return replace(self, mpp=mpp if self.mpp is None else self.mpp,
                       tile_size=tile_size if self.tile_size is None else self.tile_size)

    @property
    def step(self) -> int:
        """Distance between neighbouring tiles in pixels at `mpp` (stride, default the tile size)."""
        assert self.tile_size is not None, "resolve the GridSpec first"
        return self.stride or self.tile_size


@dataclass
class TileGrid:
    """The kept tiles of a slide's grid with their grid index, level-0 top-left and tissue fraction.

    `shape` (rows, cols) counts every cell of the grid, kept or not, the partial last row and column included.
    """

    spec: GridSpec
    mpp_xy: tuple[float, float]  # level-0 µm per pixel along x and y
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
    def tile_size_level0(self) -> tuple[float, float]:
        """Tile (width, height) in level-0 pixels: equal for square pixels, else the tile is square in µm."""
        side_um = self.spec.tile_size * self.spec.mpp
        return side_um / self.mpp_xy[0], side_um / self.mpp_xy[1]

    @property
    def smaller_than_tile(self) -> bool:
        """Whether the slide is narrower or shorter than one tile, so that every tile of it is padded."""
        w0, h0 = self.tile_size_level0
        return self.dimensions[0] + _EPS < w0 or self.dimensions[1] + _EPS < h0

    def empty_reason(self) -> tuple[str, str]:
        """Why a grid kept no tile, as a manifest (status, error text): `smaller_than_tile` when the slide is
        smaller than one tile along x or y (its padded tiles fell short of min_tissue), else
        `skipped_no_tissue`."""
        if not self.smaller_than_tile:
            return "skipped_no_tissue", ""
        w0, h0 = self.tile_size_level0
        return "smaller_than_tile", (
            f"the slide ({self.dimensions[0]}x{self.dimensions[1]} px) is smaller than one tile ({w0:.0f}x{h0:.0f} "
            f"level-0 px: {self.spec.tile_size} px at {self.spec.mpp:g} µm/px) and no padded tile has "
            f"--min-tissue {self.spec.min_tissue:g} tissue; pass a smaller --tile-size or --min-tissue")

    def geometry(self) -> dict[str, Any]:
        """The grid-file metadata that describes this grid's geometry (DESIGN.md "Grid file").

        `slide_mpp` is the level-0 pixel size along x (the pixel size when pixels are square: the DESIGN
        contract's single value, right for readers that measure the slide's width); `slide_mpp_x` and
        `slide_mpp_y` give both axes and differ on scanners with non-square pixels.
        """
        return {"slide_mpp": self.mpp_xy[0], "slide_mpp_x": self.mpp_xy[0], "slide_mpp_y": self.mpp_xy[1],
                "target_mpp": self.spec.mpp, "tile_size": self.spec.tile_size, "stride": self.spec.step,
                "min_tissue": self.spec.min_tissue, "grid_shape": list(self.shape),
                "slide_dimensions": list(self.dimensions)}

    def to_table(self, source_uri: str | None = None) -> pa.Table:
        """The kept tiles as an Arrow table, with the grid geometry as JSON metadata under `slidegrid`."""
        table = pa.table({"row": pa.array(self.row, pa.int32()), "col": pa.array(self.col, pa.int32()),
                          "x": pa.array(self.x, pa.int64()), "y": pa.array(self.y, pa.int64()),
                          "tissue": pa.array(self.tissue, pa.float32())})
        meta = {"source_uri": source_uri, **self.geometry(), "spec": asdict(self.spec)}
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


def _box_mean(mask: np.ndarray, u0: np.ndarray, v0: np.ndarray, u1: np.ndarray, v1: np.ndarray,
              extent: tuple[float, float] | None = None) -> np.ndarray:
    """Area-weighted mean of `mask` over boxes in continuous pixel units; outside the mask, and beyond
    `extent` (width, height in mask px) when given, counts as 0 while still counting in the box's area.

    u (x) and v (y) broadcast against each other: per-column u of shape (1, n) and per-row v of shape (m, 1)
    give the (m, n) lattice without materializing a box per cell first.
    Exact: inside each pixel the integral of a piecewise-constant image is bilinear, so bilinear
    interpolation of the summed-area table at the box corners gives the true covered area.
    """
    h, w = mask.shape
    shape = np.broadcast_shapes(np.shape(u0), np.shape(v0))
    if h == 0 or w == 0:
        return np.zeros(shape)
    table = _integral(mask)
    uw, vh = (w, h) if extent is None else (min(w, extent[0]), min(h, extent[1]))

    def at(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        u, v = np.clip(u, 0, uw), np.clip(v, 0, vh)
        c, r = np.minimum(u.astype(np.int64), w - 1), np.minimum(v.astype(np.int64), h - 1)
        a, b = u - c, v - r
        return (table[r, c] * (1 - a) * (1 - b) + table[r, c + 1] * a * (1 - b)
                + table[r + 1, c] * (1 - a) * b + table[r + 1, c + 1] * a * b)

    area = np.maximum((u1 - u0) * (v1 - v0), 1e-12)
    return (at(u1, v1) - at(u0, v1) - at(u1, v0) + at(u0, v0)) / area


def _grid_positions(extent: int, size0: float, step0: float, min_inside: float) -> np.ndarray:
    """Level-0 starts round(i * step0), i = 0, 1, ..., of the tiles along one axis of `extent` px: from 0 until
    a tile reaches the far edge, the last one (which may run past it) only while at least `min_inside` of its
    side lies inside the slide. A tile that fails that could never be kept (outside the slide is no tissue)."""
    if extent < 1:
        return np.zeros(0, np.int64)
    pos = np.round(np.arange(int(extent / step0) + 2) * step0).astype(np.int64)  # the last one starts >= extent
    prev_end = np.concatenate([[-np.inf], pos[:-1] + size0])
    inside = np.minimum(extent - pos, size0) / size0
    return pos[(pos < extent) & (prev_end < extent - _EPS) & (inside >= min_inside - _EPS)]


def tissue_fraction(tissue: TissueMask, x: np.ndarray, y: np.ndarray, size0: float | Sequence[float],
                    slide_mpp: float | Sequence[float], dimensions: tuple[int, int] | None = None) -> np.ndarray:
    """Exact tissue fraction of tiles whose top-lefts are level-0 (x, y) and whose side is `size0` level-0 px
    (one number, or (width, height) for non-square pixels), the slide's pixel size `slide_mpp` µm (one number,
    or (x, y)). The fraction is over the whole tile: mask beyond the mask's edge, and beyond the slide's
    level-0 `dimensions` (width, height) when given, counts as no tissue. x and y broadcast (a (1, n) row of
    column starts and an (m, 1) column of row starts give an (m, n) lattice)."""
    mx, my = as_mpp_xy(slide_mpp)
    w0, h0 = _pair(size0, "tile size (level-0 px)")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    fx, fy = mx / tissue.mpp, my / tissue.mpp  # mask px per level-0 px along x and y
    extent = None if dimensions is None else (dimensions[0] * fx, dimensions[1] * fy)
    return _box_mean(tissue.mask, x * fx, y * fy, (x + w0) * fx, (y + h0) * fy, extent)


def tile_grid(dimensions: tuple[int, int], slide_mpp: float | Sequence[float], spec: GridSpec,
              tissue: TissueMask | None = None) -> TileGrid:
    """The grid's tiles with at least `spec.min_tissue` tissue, row-major (`tissue` None: the slide is tissue).

    `slide_mpp` is the level-0 pixel size in µm: one number for square pixels, or (mpp_x, mpp_y). Tiles are
    square in µm: tile (row, col) starts at level-0 x = round(col * step * mpp / mpp_x), y = round(row * step
    * mpp / mpp_y) and spans tile_size * mpp / mpp_x by tile_size * mpp / mpp_y level-0 px.

    Edges: a tile's tissue fraction is over the whole tile, the part outside the slide counting as no tissue
    (readers pad it with white). Columns run from x = 0 until one reaches the slide's right edge, rows likewise;
    a last column (row) that runs past the edge belongs to the grid when at least `min_tissue` of its width
    (height) lies inside the slide, since otherwise none of its tiles could be kept, and its tiles are kept like
    any other. So tissue in the strip beyond the last whole tile is kept, and a slide smaller than one tile is
    one padded tile when its tissue covers `min_tissue` of that tile (else the grid is empty:
    `TileGrid.empty_reason`). Without overlap the kept tiles are Trident's (every tile starting inside the
    slide, tissue over the whole tile); CLAM and hs2p pad the border likewise by default (`use_padding`).
    `shape` counts the partial row and column. Fractions are exact covered areas of the mask, from one
    summed-area table.
    An unchosen mpp / tile size is DEFAULT_MPP / DEFAULT_TILE_SIZE (`GridSpec.resolved`).
    Raises ConfigError for a pixel size that is not positive.
    """
    spec = spec.resolved()
    W, H = int(dimensions[0]), int(dimensions[1])
    mx, my = as_mpp_xy(slide_mpp)
    sx, sy = spec.mpp / mx, spec.mpp / my  # level-0 px per target px along x and y
    size0 = (spec.tile_size * sx, spec.tile_size * sy)
    xs = _grid_positions(W, size0[0], spec.step * sx, spec.min_tissue)
    ys = _grid_positions(H, size0[1], spec.step * sy, spec.min_tissue)
    if not len(xs) or not len(ys):  # no cell at all (a slide too small for --min-tissue): a (0, 0) grid
        xs = ys = np.zeros(0, np.int64)
    if tissue is None:
        # All tissue: a tile's fraction is its share inside the slide.
        frac = np.outer(np.minimum(H - ys, size0[1]) / size0[1], np.minimum(W - xs, size0[0]) / size0[0])
    else:
        # The (rows, cols) lattice straight from per-row and per-column starts: a few lattice-sized arrays
        # instead of per-tile coordinates and temporaries (dense strides on wide slides: ~4x less memory).
        frac = tissue_fraction(tissue, xs[None, :], ys[:, None], size0, (mx, my), (W, H))
    rr, cc = np.nonzero(frac >= spec.min_tissue - _EPS)  # row-major; a tile exactly at the threshold stays
    return TileGrid(spec=spec, mpp_xy=(mx, my), dimensions=(W, H), shape=(len(ys), len(xs)),
                    row=rr.astype(np.int32), col=cc.astype(np.int32), x=xs[cc], y=ys[rr],
                    tissue=frac[rr, cc].astype(np.float32))


def concentric_tiles(center_x: float, center_y: float, mpps: Sequence[float], size: int,
                     slide_mpp: float | Sequence[float]) -> list[tuple[int, int, float]]:
    """Level-0 top-left and mpp of `size`-px tiles sharing one centre, one per mpp (MRN: 0.5/1/2/4 µm/px).

    `slide_mpp` is one number or (mpp_x, mpp_y); each tile is square in µm, so its level-0 half-extent is
    size * mpp / mpp_x / 2 along x and size * mpp / mpp_y / 2 along y.
    """
    mx, my = as_mpp_xy(slide_mpp)
    return [(int(round(center_x - size * mpp / mx / 2)), int(round(center_y - size * mpp / my / 2)), float(mpp))
            for mpp in mpps]


def read_concentric(slide: Slide, center_x: float, center_y: float, mpps: Sequence[float],
                    size: int) -> np.ndarray:
    """(len(mpps), size, size, 3) concentric tiles read at their exact mpp; outside the slide is white."""
    return np.stack([slide.read_region(x, y, size, size, mpp)
                     for x, y, mpp in concentric_tiles(center_x, center_y, mpps, size, slide.mpp_xy)])


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
    `slide_mpp` is one number: sampling needs square pixels, which `Slide.mpp` guarantees (it refuses others).
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
