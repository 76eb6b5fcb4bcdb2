"""Synthetic pyramidal slides with known ground truth, written tile by tile (bounded memory at any size).

H&E-like procedural content: near-white glass, tissue blobs of pink stroma with fibres and sparse purple
nuclei, and optional tumour regions inside tissue with dense, large, dark nuclei. Every pyramid level is
rendered directly from a resolution-independent description (star-shaped regions in level-0 pixels and
periodic textures), so a 100,000 x 80,000 slide streams to disk without ever existing in memory.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from ..io.annotations import Annotation
    from .texture import PatchBank

TEXTURE = 1024  # level-0 texture period in pixels
MASK_MPP = 8.0  # resolution of the PNG ground-truth masks
_LATTICE = 16  # pixels between exact region evaluations inside a tile


@dataclass(frozen=True)
class SyntheticSpec:
    """What to draw: size, resolution, seed, tissue and tumour layout."""

    width: int = 4096
    height: int = 3072
    mpp: float = 0.5
    seed: int = 0
    n_tumours: int = 1
    tumour_radius_um: tuple[float, float] = (150.0, 400.0)
    n_tissue_blobs: int = 3
    tile: int = 256
    quality: int = 90
    write_mpp: bool = True
    blank: bool = False


@dataclass(frozen=True)
class Region:
    """A star-shaped region: centre, base radius (level-0 px) and boundary harmonics."""

    cx: float
    cy: float
    radius: float
    harmonics: tuple[tuple[float, int, float], ...]  # (amplitude, frequency, phase)

    def radius_at(self, theta: np.ndarray) -> np.ndarray:
        """Boundary radius at angle theta."""
        r = np.ones_like(theta)
        for a, k, p in self.harmonics:
            r = r + a * np.sin(k * theta + p)
        return self.radius * r

    def signed(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Boundary radius minus distance from the centre: positive inside (level-0 px)."""
        dx, dy = x - self.cx, y - self.cy
        return self.radius_at(np.arctan2(dy, dx)) - np.hypot(dx, dy)

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether level-0 points lie inside."""
        return self.signed(x, y) >= 0

    def bbox(self) -> tuple[float, float, float, float]:
        """Conservative level-0 bounding box (x0, y0, x1, y1)."""
        r = self.radius * (1 + sum(abs(a) for a, _, _ in self.harmonics))
        return self.cx - r, self.cy - r, self.cx + r, self.cy + r

    def polygon(self, n: int = 128) -> np.ndarray:
        """(n, 2) boundary polygon in level-0 px."""
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        r = self.radius_at(t)
        return np.stack([self.cx + r * np.cos(t), self.cy + r * np.sin(t)], axis=1)


@dataclass
class SyntheticTruth:
    """Ground truth of a synthetic slide.

    Procedural slides: the tumour is the union of `tumours` (smooth polygons). Patch-mosaic slides
    (`synth.texture`): the tumour is cell-quantized, `cells[i, j]` (0 glass, 1 normal patch, 2 tumour patch)
    on a lattice of `cell_px` level-0 px, and polygons, masks and areas all follow the cells, never the smooth
    lesion they were drawn from (a patch's label holds for the whole cell it fills, nothing finer).
    """

    label: int
    tumour_polygons: list[np.ndarray]
    tumour_area_um2: float
    tissue_area_um2: float
    dimensions: tuple[int, int]
    mpp: float
    tissue: list[Region] = field(default_factory=list)
    tumours: list[Region] = field(default_factory=list)
    cells: np.ndarray | None = None
    cell_px: int = 0
    patches: np.ndarray | None = None  # mosaic only: index into the PatchBank per cell, -1 glass
    tumour_holes: list[list[np.ndarray]] = field(default_factory=list)

    def masks(self, mpp: float) -> tuple[np.ndarray, np.ndarray]:
        """(tissue, tumour) boolean masks at `mpp`, computed in bands of rows to bound memory."""
        f = mpp / self.mpp
        w, h = max(1, round(self.dimensions[0] / f)), max(1, round(self.dimensions[1] / f))
        x = (np.arange(w) + 0.5) * f
        if self.cells is not None:  # each mask pixel takes the class of the cell holding its centre
            ny, nx = self.cells.shape
            ix = np.minimum((x // self.cell_px).astype(int), nx - 1)
            iy = np.minimum(((np.arange(h) + 0.5) * f // self.cell_px).astype(int), ny - 1)
            cls = self.cells[iy][:, ix]
            return cls > 0, cls == 2
        tissue, tumour = np.zeros((h, w), bool), np.zeros((h, w), bool)
        for r0 in range(0, h, 256):
            y = (np.arange(r0, min(h, r0 + 256)) + 0.5) * f
            xx, yy = np.meshgrid(x, y)
            tissue[r0:r0 + len(y)] = _union(self.tissue, xx, yy)
            tumour[r0:r0 + len(y)] = _union(self.tumours, xx, yy)
        return tissue, tumour

    def tumour_annotations(self) -> list[Annotation]:
        """The tumour as `annotations.Annotation`s (level-0 px, label "Tumor"), holes included."""
        from ..io.annotations import Annotation

        holes = self.tumour_holes or [[] for _ in self.tumour_polygons]
        return [Annotation(p, list(h), "Tumor") for p, h in zip(self.tumour_polygons, holes)]


def _union(regions: list[Region], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape, bool)
    for r in regions:
        out |= r.contains(x, y)
    return out


_FREQUENCIES = (2, 3, 5, 7)  # of a region's boundary harmonics


def _harmonics(rng: np.random.Generator, amp: float) -> tuple[tuple[float, int, float], ...]:
    return tuple((float(rng.uniform(0.3, 1.0) * amp / k), int(k), float(rng.uniform(0, 2 * np.pi)))
                 for k in _FREQUENCIES)


_TUMOUR_WOBBLE = 0.2  # amplitude of a lesion's boundary harmonics (_harmonics)
# The furthest a lesion's boundary reaches, in units of its radius: 1 + the largest sum of its harmonics.
_REACH = 1 + _TUMOUR_WOBBLE * sum(1 / k for k in _FREQUENCIES)


def layout(spec: SyntheticSpec) -> tuple[list[Region], list[Region]]:
    """Tissue blobs and tumour regions, deterministic per seed. Each tumour lies wholly inside its blob with the
    radius drawn from `spec.tumour_radius_um`, shrunk only where the blob is too small to hold it (a blob's
    radius is 0.18-0.28 of the slide's shorter side)."""
    rng = np.random.default_rng(spec.seed)
    if spec.blank:
        return [], []
    W, H = spec.width, spec.height
    tissue = []
    for _ in range(spec.n_tissue_blobs):
        r = rng.uniform(0.18, 0.28) * min(W, H)
        cx, cy = rng.uniform(r * 0.9, W - r * 0.9), rng.uniform(r * 0.9, H - r * 0.9)
        tissue.append(Region(float(cx), float(cy), float(r), _harmonics(rng, 0.25)))
    tumours = []
    for i in range(spec.n_tumours):
        blob = tissue[i % len(tissue)]
        lo, hi = (v / spec.mpp for v in spec.tumour_radius_um)
        # The drawn radius is kept unless the lesion would not fit inside its blob: the blob's boundary never
        # comes closer to its centre than `inner`, a lesion's never further from its own than radius x _REACH.
        inner = blob.radius * (1 - sum(a for a, _, _ in blob.harmonics))
        r = float(min(rng.uniform(lo, hi), 0.9 * inner / _REACH))
        ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 1) * max(0.0, 0.9 * inner - r * _REACH)
        tumours.append(Region(float(blob.cx + dist * np.cos(ang)), float(blob.cy + dist * np.sin(ang)), r,
                              _harmonics(rng, _TUMOUR_WOBBLE)))
    return tissue, tumours


def _glass(rng: np.random.Generator) -> np.ndarray:
    """Near-white glass (TEXTURE x TEXTURE x 3 float, periodic): the first draw of a slide's texture generator."""
    return np.clip(242 + rng.normal(0, 2.0, (TEXTURE, TEXTURE, 1)), 0, 255).repeat(3, axis=2)


def _textures(seed: int, mpp: float) -> dict[str, np.ndarray]:
    """Level-0 texture tiles (TEXTURE x TEXTURE, periodic): glass, stroma, tumour."""
    rng = np.random.default_rng(10_000 + seed)
    n = TEXTURE
    glass = _glass(rng)
    yy, xx = np.mgrid[0:n, 0:n]
    fibres = np.sin((xx * 0.7 + yy * 0.3) * 2 * np.pi / 37 + 3 * np.sin(yy * 2 * np.pi / n * 4)) * 0.5 + 0.5
    stroma = np.empty((n, n, 3))
    stroma[..., 0] = 232 - 18 * fibres
    stroma[..., 1] = 160 - 35 * fibres
    stroma[..., 2] = 200 - 20 * fibres
    tumour = np.empty((n, n, 3))
    tumour[...] = (200, 140, 200)

    def nuclei(img: np.ndarray, count: int, radius_um: tuple[float, float], colour: tuple[int, int, int]) -> None:
        for _ in range(count):
            cx, cy = rng.integers(0, n, 2)
            r = max(1, int(rng.uniform(*radius_um) / mpp))
            for dx in (-n, 0, n):  # draw wrapped copies so the texture stays periodic
                for dy in (-n, 0, n):
                    cv2.circle(img, (int(cx + dx), int(cy + dy)), r, colour, -1, lineType=cv2.LINE_AA)

    area_um2 = (n * mpp) ** 2
    nuclei(stroma, int(area_um2 / 900), (2.0, 3.0), (110, 60, 150))
    nuclei(tumour, int(area_um2 / 120), (3.5, 5.5), (70, 30, 120))
    noise = rng.normal(0, 4.0, (n, n, 1))
    return {"glass": glass.astype(np.uint8),
            "stroma": np.clip(stroma + noise, 0, 255).astype(np.uint8),
            "tumour": np.clip(tumour + noise, 0, 255).astype(np.uint8)}


class _Renderer:
    """Renders tiles of any pyramid level from the layout and per-level textures."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        self.tissue, self.tumours = layout(spec)
        self._base: dict[str, np.ndarray] | None = None
        self._level_tex: dict[int, dict[str, np.ndarray]] = {}
        # Linear interpolation from the lattice to every pixel of a tile, as one (t, n) matrix.
        lattice = np.arange(0, spec.tile + _LATTICE, _LATTICE)
        self._interp = np.clip(1 - np.abs(np.arange(spec.tile)[:, None] - lattice[None, :]) / _LATTICE, 0, None)

    @property
    def base(self) -> dict[str, np.ndarray]:
        """Level-0 textures, drawn on first use (~0.7 s; the patch mosaic needs none of them)."""
        if self._base is None:
            self._base = _textures(self.spec.seed, self.spec.mpp)
        return self._base

    def textures(self, d: int) -> dict[str, np.ndarray]:
        if d not in self._level_tex:
            size = max(1, TEXTURE // d)
            tex = {k: cv2.resize(v, (size, size), interpolation=cv2.INTER_AREA) for k, v in self.base.items()}
            reps = max(1, math.ceil(2 * self.spec.tile / size))
            self._level_tex[d] = {k: np.tile(v, (reps, reps, 1)) for k, v in tex.items()}
        return self._level_tex[d]

    def _inside(self, regions: list[Region], x0: float, y0: float, d: int) -> np.ndarray:
        """Union of regions over a tile: exact on a coarse lattice, bilinear in between (fast, smooth edges)."""
        t = self.spec.tile
        lattice = np.arange(0, t + _LATTICE, _LATTICE)
        ly, lx = np.meshgrid(y0 + (lattice + 0.5) * d, x0 + (lattice + 0.5) * d, indexing="ij")
        field = np.max([r.signed(lx, ly) for r in regions], axis=0)
        w = self._interp
        # cv2.gemm, not `@`: multi-threaded BLAS on these tiny products is ~50x slower on a busy machine.
        return cv2.gemm(w, cv2.gemm(field, w, 1, None, 0, flags=cv2.GEMM_2_T), 1, None, 0) >= 0

    def tile(self, d: int, tx: int, ty: int) -> np.ndarray:
        """Tile (tx, ty) of the level with downsample d."""
        t = self.spec.tile
        tex = self.textures(d)
        period = max(1, TEXTURE // d)
        ox, oy = (tx * t) % period, (ty * t) % period
        out = tex["glass"][oy:oy + t, ox:ox + t].copy()  # the one allocation per tile: tifffile keeps it
        x0, y0, x1, y1 = tx * t * d, ty * t * d, (tx + 1) * t * d, (ty + 1) * t * d
        hits_t = [r for r in self.tissue if _overlaps(r.bbox(), (x0, y0, x1, y1))]
        if not hits_t:
            return out
        in_tissue = self._inside(hits_t, x0, y0, d)
        np.copyto(out, tex["stroma"][oy:oy + t, ox:ox + t], where=in_tissue[..., None])
        hits_u = [r for r in self.tumours if _overlaps(r.bbox(), (x0, y0, x1, y1))]
        if hits_u:
            in_tumour = self._inside(hits_u, x0, y0, d) & in_tissue
            np.copyto(out, tex["tumour"][oy:oy + t, ox:ox + t], where=in_tumour[..., None])
        return out

    def tiles(self, d: int, w: int, h: int) -> Iterator[np.ndarray]:
        t = self.spec.tile
        for ty in range(math.ceil(h / t)):
            for tx in range(math.ceil(w / t)):
                yield self.tile(d, tx, ty)

    def truth(self) -> SyntheticTruth:
        """Ground truth of the rendered slide: the tumour regions inside tissue, areas from 8 µm/px masks."""
        spec = self.spec
        truth = SyntheticTruth(label=int(bool(self.tumours)), tumour_polygons=[r.polygon() for r in self.tumours],
                               tumour_area_um2=0.0, tissue_area_um2=0.0, dimensions=(spec.width, spec.height),
                               mpp=spec.mpp, tissue=self.tissue, tumours=self.tumours)
        t_mask, u_mask = truth.masks(MASK_MPP)
        truth.tissue_area_um2 = float(t_mask.sum() * MASK_MPP ** 2)
        truth.tumour_area_um2 = float((u_mask & t_mask).sum() * MASK_MPP ** 2)
        return truth


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _levels(spec: SyntheticSpec) -> list[int]:
    """Downsamples 1, 4, 16, ... until the level fits in ~1024 px."""
    ds, d = [1], 1
    while max(spec.width, spec.height) / d > 1024:
        d *= 4
        ds.append(d)
    return ds


def write_synthetic_slide(path: str, spec: SyntheticSpec = SyntheticSpec(),
                          texture: PatchBank | None = None) -> SyntheticTruth:
    """Write a pyramidal tiled BigTIFF (pyramid in SubIFDs, mpp in the resolution tags) and return its truth.

    Procedural tissue in JPEG tiles (quality `spec.quality`) by default. With `texture` (a `PatchBank` from
    `texture.load_patch_bank`), tissue is a mosaic of its real patches (`synth.texture`), written
    lossless (Deflate + horizontal predictor) so level 0 holds the patches' decoded pixels exactly; `spec.mpp`
    must then equal `texture.mpp` (ConfigError otherwise: level 0 is never resampled).
    """
    import tifffile

    if texture is None:
        render = _Renderer(spec)
        codec: dict = {"compression": "jpeg", "compressionargs": {"level": spec.quality}}
    else:
        from .texture import MosaicRenderer

        render = MosaicRenderer(spec, texture)
        # Lossless: a second JPEG generation over the patches' own JPEG artefacts would change every pixel,
        # so no test could tell which patch lies where; Deflate is what every TIFF reader (libtiff/OpenSlide,
        # tifffile, Bio-Formats, libvips) decodes, which zstd is not yet.
        codec = {"compression": "zlib", "predictor": True}
    levels = _levels(spec)
    res = {"resolution": (1e4 / spec.mpp, 1e4 / spec.mpp), "resolutionunit": "CENTIMETER"} if spec.write_mpp else {}
    common = {"dtype": np.uint8, "tile": (spec.tile, spec.tile), "photometric": "rgb", **codec,
              "maxworkers": os.cpu_count() or 1,
              # tifffile gathers 512 MB of raw tiles per compression pass by default; keep that small
              "buffersize": 32 << 20}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for i, d in enumerate(levels):
            w, h = math.ceil(spec.width / d), math.ceil(spec.height / d)
            extra = {"subifds": len(levels) - 1, "description": "slidegrid synthetic slide"} if i == 0 else \
                {"subfiletype": 1}
            level_res = {"resolution": (1e4 / (spec.mpp * d),) * 2, "resolutionunit": "CENTIMETER"} \
                if spec.write_mpp else {}
            tif.write(render.tiles(d, w, h), shape=(h, w, 3), **common, **extra, **(res if i == 0 else level_res),
                      metadata=None)
    os.replace(tmp, path)
    return render.truth()


# The smallest slide `synth` writes: a level 0 of a few tissue blobs (the tests' smallest slides are 1024 px).
MIN_SYNTH_SIZE = 512


def synthesize_archive(out_dir: str, n: int = 8, size: int = 4096, seed: int = 0, mpp: float | None = None,
                       tumour_rate: float = 0.5, n_folds: int = 5, progress: bool = True,
                       tumours: tuple[int, int] = (1, 2),
                       tumour_radius_um: tuple[float, float] = SyntheticSpec.tumour_radius_um,
                       texture_from: str | None = None, split: str | None = None,
                       patch_mpp: float | None = None) -> str:
    """Write n slides (balanced tumour/normal), GeoJSON + PNG ground truth and cohort.csv; returns its path.

    Slides come two to a patient (`patient_id`), and a patient's slides share a `fold` (folds are drawn by
    patient, as train/splits.py requires of a cohort).

    A tumour slide has between tumours[0] and tumours[1] tumours of radius `tumour_radius_um` (µm, before the
    boundary harmonics). Procedural tissue at `mpp` (default 0.5 µm/px) by default; with `texture_from` (a
    patch folder, `texture.load_patch_bank`) and `split`, tissue is tiled from that split's real
    patches at their own `patch_mpp` (default PCam's 0.97; `mpp`, when given, must equal it), cohort.csv gains
    a `texture_split` column and `texture.json` records how often patches repeat. ConfigError (nothing
    written) for a missing split, a split without the patch classes needed, an mpp that disagrees, no slides, a
    size under MIN_SYNTH_SIZE, a tumour rate outside 0..1 or a radius range that is not 0 < min <= max.
    """
    from tqdm import tqdm

    from ..errors import ConfigError
    from ..io.annotations import write_geojson

    if n < 1:
        raise ConfigError("--n", f"{n} slides: write at least 1")
    if size < MIN_SYNTH_SIZE:
        raise ConfigError("--size", f"{size} px: slides need at least {MIN_SYNTH_SIZE} px across (tissue blobs and "
                                    "tumours are laid out at 0.5 µm/px)")
    if not 0 <= tumour_rate <= 1:
        raise ConfigError("--tumour-rate", f"{tumour_rate} is a fraction of the slides: within 0..1")
    lo, hi = tumour_radius_um
    if not 0 < lo <= hi:
        raise ConfigError("--tumour-radius-um", f"{lo:g} {hi:g}: give MIN MAX in µm with 0 < MIN <= MAX (e.g. "
                                                f"{SyntheticSpec.tumour_radius_um[0]:g} "
                                                f"{SyntheticSpec.tumour_radius_um[1]:g})")
    bank = None
    if texture_from is None:
        if split is not None or patch_mpp is not None:
            raise ConfigError("--split" if split is not None else "--patch-mpp",
                              "only means something with --texture-from PATCH_ROOT")
        mpp = 0.5 if mpp is None else mpp
    else:
        from .texture import PCAM_MPP, load_patch_bank

        if not split:
            raise ConfigError("--split", "required with --texture-from: the patch split the slides are tiled from "
                                         "(train, valid or test for PCam), one per cohort role")
        patch_mpp = PCAM_MPP if patch_mpp is None else patch_mpp
        if mpp is not None and not math.isclose(mpp, patch_mpp, rel_tol=1e-9):
            raise ConfigError("--mpp", f"{mpp} µm/px differs from the patches' {patch_mpp} (--patch-mpp); texture "
                                       "slides are written at the patches' own pixel size, never resampled: drop "
                                       "--mpp and read them at any mpp (encode/tiles --mpp)")
        mpp = patch_mpp
        bank = load_patch_bank(texture_from, split, patch_mpp)
        bank.require(0)
        if round(n * tumour_rate) > 0:
            bank.require(1)
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, int)
    labels[: int(round(n * tumour_rate))] = 1
    rng.shuffle(labels)
    for sub in ("slides", "annotations", "masks"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    rows = []
    uses = np.zeros(len(bank.paths) if bank else 0, np.int64)
    for i in tqdm(range(n), desc="synthesizing", unit="slide", disable=not progress):
        sid = f"slide_{i:04d}"
        slide_path = os.path.join(out_dir, "slides", f"{sid}.tiff")
        spec = SyntheticSpec(width=size, height=int(size * 0.75), mpp=mpp, seed=seed * 100_003 + i,
                             n_tumours=int(labels[i]) * int(rng.integers(tumours[0], tumours[1] + 1)),
                             tumour_radius_um=tumour_radius_um)
        truth = write_synthetic_slide(slide_path, spec, texture=bank)
        ann = ""
        if truth.label:
            ann = os.path.join("annotations", f"{sid}.geojson")
            write_geojson(truth.tumour_annotations(), os.path.join(out_dir, ann))
        _, u = truth.masks(MASK_MPP)
        cv2.imwrite(os.path.join(out_dir, "masks", f"{sid}.png"), u.astype(np.uint8) * 255)
        row = {"slide_id": sid, "uri": os.path.join("slides", f"{sid}.tiff"), "label": int(truth.label),
               "fold": i // 2 % n_folds, "annotation": ann, "patient_id": f"patient_{i // 2:04d}",
               "tumour_area_um2": round(truth.tumour_area_um2, 1)}
        if bank is not None:
            row["texture_split"] = bank.split
            used = truth.patches[truth.patches >= 0]
            uses += np.bincount(used, minlength=len(uses))
        rows.append(row)
    cohort = os.path.join(out_dir, "cohort.csv")
    with open(cohort, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if bank is not None:
        _write_texture_report(os.path.join(out_dir, "texture.json"), bank, uses, n)
    return cohort


def _write_texture_report(path: str, bank: PatchBank, uses: np.ndarray, n_slides: int) -> None:
    """texture.json: the patch source and, per class, patches available, cells drawn and how often the
    patches used repeat (a cohort role's patches repeat within it; no other split is touched)."""
    import json

    report: dict = {"texture_from": os.path.abspath(bank.root), "split": bank.split, "patch_mpp": bank.mpp,
                    "patch_px": bank.size, "slides": n_slides, "skipped_duplicates": bank.skipped_duplicates}
    for label, name in ((0, "normal"), (1, "tumour")):
        u = uses[bank.labels == label]
        used = u[u > 0]
        report[name] = {"patches": int(len(u)), "cells": int(u.sum()), "distinct_used": int(len(used)),
                        "mean_uses_per_used_patch": round(float(used.mean()), 2) if len(used) else 0.0,
                        "max_uses": int(u.max()) if len(u) else 0}
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
