"""Real-texture synthetic slides: the tissue of a synthetic layout tiled from real H&E patches (issue 16, item 3).

Level 0 is a mosaic on a lattice whose pitch is the patch side (96 px for PatchCamelyon): a cell whose centre
lies inside tissue gets a patch, a label-1 (tumour) patch when its centre also lies inside a tumour region, else
a label-0 (normal) patch; every other cell stays glass. Patches are drawn with replacement, seeded per slide,
from one split of the patch folder only, so slides built from `train/`, `valid/` and `test/` share no patch.
Level 0 is written at the patches' own pixel size and never resampled; lower levels are exact box averages of
the rendered level 0, block by block (memory per tile, not per slide).

Ground truth is the cell-quantized lesion: PCam's label says only that the centre 32 x 32 px of a label-1 patch
holds tumour and that of a label-0 patch none (Veeling et al. 2018, arXiv:1806.03962), so the smooth lesion
polygon would call normal patches tumour along its edge; the GeoJSON, PNG mask, area and slide label all follow
the cells that carry label-1 patches.

Repeats: a cell draws uniformly from the N patches of its class, so n cells of that class use on average
N(1 - (1 - 1/N)^n) distinct patches. Measured over 40 layouts: a 4096 x 3072 slide at 96 px (0.97 µm/px) has
435 tissue cells (285-581), so on PCam `train/` (1,000 normal patches) ~353 distinct normal patches, each
~1.2 times; a cohort of S such slides uses each normal patch ~0.43 S times (40 slides: ~17). Tumour cells are
few (27 per tumour slide at the default 150-400 µm, 9-55), so tumour patches repeat far less (20 tumour slides:
~0.5 uses per patch).
An 8192 x 6144 slide has 1,737 tissue cells, ~2.1 uses per normal patch used. `synthesize_archive` writes the
measured counts to `texture.json`.

The patch folder is listed by the project's one patch-set reader (`encoders.patches.read_patch_set`: PCam's
`ROOT/<split>/<0|1>/*` with `ROOT/index.csv`'s `duplicate_of` rows left out, or a `path,label,split` table) and
decoded by its `decode_patch` (PIL; on all 8,000 PCam JPEGs pixel for pixel what OpenCV decodes), with a cache
of decoded patches per bank.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache

import cv2
import numpy as np

from ..encoders.patches import decode_patch
from ..errors import ConfigError
from .slides import TEXTURE, SyntheticSpec, SyntheticTruth, _glass, _Renderer, _union

# PatchCamelyon: Camelyon16 scanned at 40x (0.243 µm/px) downsampled to a nominal 10x, 0.972 µm/px
# (Veeling et al. 2018; Ehteshami Bejnordi et al., JAMA 2017).
PCAM_MPP = 0.97
LABELS = {0: "normal", 1: "tumour"}
_BLOCK = 1024  # level-0 px per side rendered at once when building lower levels
_CACHE = 4096  # decoded patches kept (96 px RGB: ~110 MB), so huge slides never hold every patch


@dataclass
class PatchBank:
    """The labelled patches of one split: `paths[k]` (absolute) with `labels[k]` (0 normal, 1 tumour).

    `mpp` is the patches' µm/px (given, not read: patch files carry none); `size` the side of every patch in
    px, which is the mosaic's lattice pitch. Pixels are decoded on demand and cached (`pixels`).
    """

    root: str
    split: str
    mpp: float
    paths: list[str]
    labels: np.ndarray
    skipped_duplicates: int = 0
    size: int = 0
    _decode: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._decode = lru_cache(maxsize=_CACHE)(self._read)
        if self.paths and not self.size:
            h, w = self._read(0).shape[:2]
            if h != w:
                raise ConfigError(self.paths[0], f"patch is {w}x{h} px; the mosaic needs square patches")
            self.size = h

    def _read(self, k: int) -> np.ndarray:
        img = decode_patch(self.paths[k])
        if self.size and img.shape[:2] != (self.size, self.size):
            raise ConfigError(self.paths[k], f"patch is {img.shape[1]}x{img.shape[0]} px, not the "
                                             f"{self.size}x{self.size} of the split's other patches; the mosaic "
                                             "tiles one patch size")
        img.setflags(write=False)
        return img

    def pixels(self, k: int) -> np.ndarray:
        """RGB uint8 (size, size, 3) of patch k (read-only, cached)."""
        return self._decode(int(k))  # type: ignore[operator]

    def of_label(self, label: int) -> np.ndarray:
        """Indices of the patches with `label` (0 normal, 1 tumour)."""
        return np.flatnonzero(self.labels == label)

    def require(self, label: int) -> None:
        """ConfigError unless the split holds patches of `label`."""
        if not (self.labels == label).any():
            raise ConfigError(self.root, f"split {self.split!r} has no {LABELS[label]} patches (label {label}: "
                                         f"folder {self.split}/{label}/ or index.csv rows); add some or choose "
                                         "another --split")


def load_patch_bank(root: str, split: str, mpp: float = PCAM_MPP) -> PatchBank:
    """The patches of `split` of a patch set, listed by the one patch-set reader, `encoders.patches.read_patch_set`
    (`ROOT/<split>/<class>/*` with `ROOT/index.csv`'s `duplicate_of` rows left out, or a `path,label,split`
    CSV): class 0 (folder `0`, or the first of two named classes in sorted order, e.g. `normal`) is normal
    tissue, class 1 tumour. `mpp`: µm/px of the patches (PCam 0.97). ConfigError (one line, with the fix) for a
    missing folder, an implausible mpp, a split that is not there, or labels other than 0 and 1."""
    from ..encoders.patches import read_patch_set

    try:
        data = read_patch_set(root, mpp)
    except ConfigError as exc:
        if exc.input == "--mpp":  # the synth flag for the patches' pixel size is --patch-mpp
            raise ConfigError("--patch-mpp", exc.reason.replace("--mpp", "--patch-mpp")) from None
        raise
    splits = data.split_names()
    if split not in splits:
        raise ConfigError(root, f"no split {split!r} here (splits: {', '.join(splits) or 'none'}); pass --split "
                                "one of them")
    idx = data.split(split)
    labels = data.labels[idx]
    odd = sorted(set(labels.tolist()) - {0, 1})
    if odd:
        raise ConfigError(root, f"split {split!r} has class {data.classes[odd[0]]!r} (label {odd[0]}); the mosaic "
                                "takes two classes, 0 (normal) and 1 (tumour)")
    return PatchBank(root=data.root, split=split, mpp=data.mpp, paths=[data.paths[i] for i in idx],
                     labels=labels.astype(np.int8), skipped_duplicates=data.duplicates_by_split.get(split, 0))


class MosaicRenderer(_Renderer):
    """Tiles of any pyramid level of a patch mosaic over the procedural layout (`synthetic.layout`).

    Reuses the layout, glass and tile iteration of the procedural renderer; only what fills tissue differs.
    """

    def __init__(self, spec: SyntheticSpec, bank: PatchBank) -> None:
        if not math.isclose(spec.mpp, bank.mpp, rel_tol=1e-9):
            raise ConfigError("--mpp", f"{spec.mpp} µm/px differs from the patches' {bank.mpp} (--patch-mpp); "
                                       "texture slides are written at the patches' own pixel size, never "
                                       "resampled: drop --mpp and read them at any mpp (encode/tiles --mpp)")
        super().__init__(spec)
        c = self.cell = bank.size
        self.bank = bank
        # A lesion's centre snapped onto a cell centre: a lesion smaller than a cell then still holds its own
        # centre cell, so a slide drawn as tumour always carries tumour patches.
        self.tumours = [replace(r, cx=(r.cx // c + 0.5) * c, cy=(r.cy // c + 0.5) * c) for r in self.tumours]
        nx, ny = math.ceil(spec.width / c), math.ceil(spec.height / c)
        cx, cy = np.meshgrid((np.arange(nx) + 0.5) * c, (np.arange(ny) + 0.5) * c)
        on_slide = (cx < spec.width) & (cy < spec.height)
        tissue = _union(self.tissue, cx, cy) & on_slide
        tumour = _union(self.tumours, cx, cy) & tissue
        self.cells = tissue.astype(np.uint8) + tumour
        self.patches = np.full((ny, nx), -1, np.int64)
        rng = np.random.default_rng([spec.seed, 0x7E47])  # the patch draw, independent of the layout's stream
        for cls, label in ((1, 0), (2, 1)):
            where = self.cells == cls
            if where.any():
                bank.require(label)
                pool = bank.of_label(label)
                self.patches[where] = pool[rng.integers(0, len(pool), int(where.sum()))]
        # The procedural slides' glass, tiled 2 x 2 so any window up to TEXTURE px is one slice (no gather).
        self.glass = np.tile(_glass(np.random.default_rng(10_000 + spec.seed)).astype(np.uint8), (2, 2, 1))

    def level0(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Level-0 RGB uint8 (h, w, 3) with top-left (x0, y0): patches pasted on glass, pixel for pixel."""
        if w <= TEXTURE and h <= TEXTURE:
            ox, oy = x0 % TEXTURE, y0 % TEXTURE
            out = self.glass[oy:oy + h, ox:ox + w].copy()
        else:
            out = self.glass[np.ix_(np.arange(y0, y0 + h) % TEXTURE, np.arange(x0, x0 + w) % TEXTURE)]
        c = self.cell
        ny, nx = self.patches.shape
        for j in range(y0 // c, min(ny, -(-(y0 + h) // c))):
            for i in range(x0 // c, min(nx, -(-(x0 + w) // c))):
                k = self.patches[j, i]
                if k < 0:
                    continue
                ax0, ax1 = max(x0, i * c), min(x0 + w, (i + 1) * c)
                ay0, ay1 = max(y0, j * c), min(y0 + h, (j + 1) * c)
                out[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = \
                    self.bank.pixels(k)[ay0 - j * c:ay1 - j * c, ax0 - i * c:ax1 - i * c]
        return out

    def tile(self, d: int, tx: int, ty: int) -> np.ndarray:
        """Tile (tx, ty) of the level with downsample d: level 0 rendered, or its d x d box means, computed in
        blocks of ~_BLOCK level-0 px (an integer factor makes INTER_AREA an exact box mean, so blocks agree
        with the whole)."""
        t = self.spec.tile
        if d == 1:
            return self.level0(tx * t, ty * t, t, t)
        out = np.empty((t, t, 3), np.uint8)
        b = max(1, _BLOCK // d)  # output px per block side
        for by in range(0, t, b):
            for bx in range(0, t, b):
                bw, bh = min(b, t - bx), min(b, t - by)
                block = self.level0((tx * t + bx) * d, (ty * t + by) * d, bw * d, bh * d)
                out[by:by + bh, bx:bx + bw] = cv2.resize(block, (bw, bh), interpolation=cv2.INTER_AREA)
        return out

    def truth(self) -> SyntheticTruth:
        """The cell-quantized truth: tumour = the cells carrying label-1 patches (polygons with holes, exact
        cell edges clipped to the slide), areas from the cells' pixel areas inside the slide."""
        from ..io.annotations import mask_to_annotations

        spec, c = self.spec, self.cell
        ny, nx = self.cells.shape
        wx = np.minimum(c, spec.width - np.arange(nx) * c)
        wy = np.minimum(c, spec.height - np.arange(ny) * c)
        area_um2 = np.outer(wy, wx) * spec.mpp ** 2
        # Contours of the cell mask at 2 sub-pixels per cell run through sub-pixel centres at cell + 1/4 or
        # + 3/4; rounding those to whole cells gives the cells' exact corners (convex and concave).
        fine = np.kron(self.cells == 2, np.ones((2, 2), np.uint8))
        anns = mask_to_annotations(fine, 0.5, 1.0, min_area_px=0)
        box = np.array([spec.width, spec.height], float)

        def corners(ring: np.ndarray) -> np.ndarray:
            return np.clip(np.round(ring) * c, 0, box)

        tumour = self.cells == 2
        return SyntheticTruth(label=int(tumour.any()), tumour_polygons=[corners(a.exterior) for a in anns],
                              tumour_holes=[[corners(h) for h in a.holes] for a in anns],
                              tumour_area_um2=float(area_um2[tumour].sum()),
                              tissue_area_um2=float(area_um2[self.cells > 0].sum()),
                              dimensions=(spec.width, spec.height), mpp=spec.mpp, tissue=self.tissue,
                              tumours=self.tumours, cells=self.cells, cell_px=c, patches=self.patches)


# Training roles of a real-texture cohort and the PatchCamelyon split each is tiled from (one split per role).
ROLE_SPLITS = {"train": "train", "val": "valid", "test": "test"}


def synthesize_split_cohorts(out_dir: str, texture_from: str, n: dict[str, int], size: int = 4096, seed: int = 0,
                             splits: dict[str, str] | None = None, patch_mpp: float | None = None,
                             progress: bool = True, **kwargs) -> str:
    """One real-texture cohort per training role, each tiled from its own patch split (`splits`, default
    ROLE_SPLITS: train/ -> train, valid/ -> val, test/ -> test), under OUT/<role>/, and OUT/cohort.csv joining
    them with the `split` column `slidegrid train` reads (train | val | test), so no patch steers two roles.

    `n`: slides per role (roles with 0 are left out; `train` and `val` are required by training, `test` to be
    scored). Slide ids are `<role>-slide_NNNN`, patients likewise, URIs and annotations absolute; the columns
    are those of `synthesize_archive` (`texture_split` included) without `fold`, plus `split`. `kwargs` go to
    synthesize_archive (tumours, tumour_radius_um, tumour_rate). Returns the joined cohort's path; ConfigError
    as synthesize_archive's, or for an unknown role."""
    from .slides import synthesize_archive

    out_dir = os.path.abspath(out_dir)  # the joined cohort's URIs are absolute wherever it is read from
    splits = splits or ROLE_SPLITS
    unknown = sorted(set(n) - set(splits))
    if unknown:
        raise ConfigError("roles", f"{', '.join(unknown)} not one of {', '.join(splits)}")
    rows: list[dict[str, str]] = []
    for k, role in enumerate(splits):
        if not n.get(role):
            continue
        d = os.path.join(out_dir, role)
        cohort = synthesize_archive(d, n[role], size=size, seed=seed * 10 + k + 1, texture_from=texture_from,
                                    split=splits[role], patch_mpp=patch_mpp, progress=progress, **kwargs)
        with open(cohort, newline="") as f:
            for r in csv.DictReader(f):
                r.pop("fold", None)
                rows.append({**r, "slide_id": f"{role}-{r['slide_id']}", "uri": os.path.join(d, r["uri"]),
                             "annotation": os.path.join(d, r["annotation"]) if r["annotation"] else "",
                             "patient_id": f"{role}-{r['patient_id']}", "split": role})
    if not rows:
        raise ConfigError("n", "no slides asked for in any role")
    path = os.path.join(out_dir, "cohort.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
