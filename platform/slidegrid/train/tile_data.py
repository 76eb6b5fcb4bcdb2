"""Tile datasets for encoder training, streamed from slides with Ray Data (papers/nic-neural-image-
compression.txt §2.2 and §4.3 for the unsupervised and contrastive datasets; RAN §3 and DigiPathAI's patch
sampler for the supervised one).

    slides ─► plan (one Ray task per slide: tissue mask, tile grid, class-balanced annotated patches)
           ─► sample (driver, numpy: random tissue tiles | same/different pairs | balanced labelled tiles)
           ─► read + augment (Ray Data map_batches, CPU tasks) ─► the Ray Train workers' shards

Contrastive pairs (NIC §2.2): half *same* (one location, two independent strong augmentations) and half
*different*, of which 75% are the non-overlapping adjacent tile (a 4-neighbour on the tile grid) and 25% a
tile of another slide.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..archive import SlideRecord, list_archive
from ..errors import ConfigError
from ..tiling import GridSpec, sample_patches, tile_grid
from ..tissue import TissueConfig, tissue_mask
from .encoder_config import EncoderTrainConfig

SAME_FRACTION = 0.5
ADJACENT_FRACTION = 0.75  # of the *different* pairs; the rest come from another slide
_NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


@dataclass
class SlideTiles:
    """One slide's candidate tiles: the kept tissue tiles of its grid and (supervised) labelled patches."""

    slide_id: str
    uri: str
    mpp_override: float | None
    row: np.ndarray
    col: np.ndarray
    x: np.ndarray
    y: np.ndarray
    patch_x: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    patch_y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    patch_label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.row)


def _label_mask(rec: SlideRecord, slide, mask_mpp: float, storage_options: dict[str, Any]) -> np.ndarray:
    """Tumour mask of a slide at `mask_mpp`; slides without an annotation are tumour-free (normal slides)."""
    from ..annotations import rasterize, read_annotations

    polygons = read_annotations(rec.annotation, storage_options) if rec.annotation else []
    return rasterize(polygons, slide.info.dimensions, slide.mpp, mask_mpp)


def plan_slide(rec: SlideRecord, cfg: EncoderTrainConfig, patches: int, seed: int) -> SlideTiles:
    """Tissue mask and tile grid of one slide, and `patches` class-balanced labelled patches (0: none)."""
    from ..slides import open_slide

    with open_slide(rec.uri, cfg.storage_options, rec.mpp) as slide:
        tissue = tissue_mask(slide, TissueConfig(mpp=cfg.tissue_mpp))
        grid = tile_grid(slide.info.dimensions, slide.mpp_xy, GridSpec(cfg.mpp, cfg.tile_size, None, cfg.min_tissue),
                         tissue)
        out = SlideTiles(rec.slide_id, rec.uri, rec.mpp, grid.row.astype(np.int64), grid.col.astype(np.int64),
                         grid.x, grid.y)
        if patches:
            # At least 8 mask pixels along a tile side, so "touches tumour" is decided finely enough.
            mask_mpp = min(cfg.tissue_mpp, cfg.tile_size * cfg.mpp / 8)
            label = _label_mask(rec, slide, mask_mpp, cfg.storage_options)
            px, py, is_tumour = sample_patches(label, mask_mpp, tissue, slide.mpp, slide.info.dimensions, patches,
                                               cfg.tile_size, cfg.mpp, np.random.default_rng(seed))
            out.patch_x, out.patch_y, out.patch_label = px, py, is_tumour.astype(np.int64)
    return out


def plan_archive(cfg: EncoderTrainConfig, use_ray: bool = True) -> list[SlideTiles]:
    """Plan every slide of the archive (one Ray task each, or in this process); slides without tissue drop out."""
    records = list_archive(cfg.input, cfg.storage_options)
    patches = math.ceil(2 * cfg.tiles / len(records)) if cfg.method == "supervised" else 0
    if cfg.method == "supervised" and not any(r.annotation for r in records):
        raise ConfigError(cfg.input, "supervised training needs tumour annotations: a cohort table with an "
                                     "`annotation` column (GeoJSON / ASAP XML per slide)")
    args = [(r, cfg, patches, cfg.seed * 100_003 + i) for i, r in enumerate(records)]
    if use_ray:
        import ray

        from ..runtime import init_ray

        init_ray()
        task = ray.remote(num_cpus=1)(plan_slide)
        plans = ray.get([task.remote(*a) for a in args])
    else:
        plans = [plan_slide(*a) for a in args]
    plans = [p for p in plans if len(p) or len(p.patch_label)]
    if not plans:
        raise ConfigError(cfg.input, f"no slide has tissue tiles of {cfg.tile_size} px at {cfg.mpp} µm/px with "
                                     f"--min-tissue {cfg.min_tissue}")
    return plans


def _tile(p: SlideTiles, i: int, suffix: str = "") -> dict[str, Any]:
    return {f"slide_id{suffix}": p.slide_id, f"uri{suffix}": p.uri,
            f"mpp{suffix}": np.nan if p.mpp_override is None else float(p.mpp_override),
            f"row{suffix}": int(p.row[i]), f"col{suffix}": int(p.col[i]), f"x{suffix}": int(p.x[i]),
            f"y{suffix}": int(p.y[i])}


def _random_tiles(plans: list[SlideTiles], n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(slide, tile) indices uniform over every kept tile of the archive."""
    sizes = np.array([len(p) for p in plans])
    flat = rng.integers(sizes.sum(), size=n)
    s = np.searchsorted(np.cumsum(sizes), flat, side="right")
    return list(zip(s.tolist(), (flat - np.concatenate([[0], np.cumsum(sizes)[:-1]])[s]).tolist()))


def sample_tiles(plans: list[SlideTiles], n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """n random tissue tiles (VAE, BiGAN: NIC's non-contrastive dataset)."""
    return [_tile(plans[s], i) for s, i in _random_tiles(plans, n, rng)]


def _neighbours(p: SlideTiles) -> list[np.ndarray]:
    """For each kept tile, the indices of its kept 4-neighbours on the grid."""
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(p.row, p.col))}
    return [np.array([index[(int(r) + dr, int(c) + dc)] for dr, dc in _NEIGHBOURS
                      if (int(r) + dr, int(c) + dc) in index], np.int64) for r, c in zip(p.row, p.col)]


def sample_pairs(plans: list[SlideTiles], n: int, rng: np.random.Generator, same_fraction: float = SAME_FRACTION,
                 adjacent_fraction: float = ADJACENT_FRACTION) -> list[dict[str, Any]]:
    """n contrastive pairs (NIC §2.2): `same` = 1 for one location twice; `same` = 0 for the adjacent
    non-overlapping tile (`adjacent_fraction` of them) or a tile of another slide; `kind` says which."""
    if len([p for p in plans if len(p)]) < 2:
        raise ConfigError("--input", "contrastive training needs at least 2 slides with tissue (a quarter of the "
                                     "*different* pairs come from another slide)")
    neighbours = {s: _neighbours(p) for s, p in enumerate(plans)}
    if not any(len(n) for per_slide in neighbours.values() for n in per_slide):
        raise ConfigError("--input", "no tissue tile has a kept neighbour, so there are no adjacent pairs; use a "
                                     "smaller --tile-size or --min-tissue")
    n_same = int(round(n * same_fraction))
    n_adjacent = int(round((n - n_same) * adjacent_fraction))
    kinds = ["same"] * n_same + ["adjacent"] * n_adjacent + ["other-slide"] * (n - n_same - n_adjacent)
    rows = []
    for kind in kinds:
        while True:  # rejection: an anchor without a kept neighbour cannot make an adjacent pair
            (s, i), = _random_tiles(plans, 1, rng)
            if kind == "same":
                other = (s, i)
            elif kind == "adjacent":
                if not len(neighbours[s][i]):
                    continue
                other = (s, int(rng.choice(neighbours[s][i])))
            else:
                (s2, j), = _random_tiles(plans, 1, rng)
                if s2 == s:
                    continue
                other = (s2, j)
            break
        rows.append({**_tile(plans[s], i), **_tile(plans[other[0]], other[1], "2"), "same": int(kind == "same"),
                     "kind": kind})
    rng.shuffle(rows)
    return rows


def sample_labelled(plans: list[SlideTiles], n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """n labelled patches, half tumour and half not (RAN §3's tumour / non-tumour tile classifier)."""
    by_class: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for p in plans:
        for x, y, label in zip(p.patch_x, p.patch_y, p.patch_label):
            by_class[int(label)].append({"slide_id": p.slide_id, "uri": p.uri, "x": int(x), "y": int(y),
                                         "mpp": np.nan if p.mpp_override is None else float(p.mpp_override),
                                         "label": int(label)})
    if not by_class[0] or not by_class[1]:
        raise ConfigError("--input", "supervised training needs tumour and non-tumour tiles; found "
                                     f"{len(by_class[1])} tumour and {len(by_class[0])} other tiles")
    rows = []
    for label, want in ((1, n // 2), (0, n - n // 2)):
        pool = by_class[label]  # drawn with replacement when a class is rarer than half an epoch
        rows += [pool[i] for i in rng.choice(len(pool), size=want, replace=want > len(pool))]
    rng.shuffle(rows)
    return rows


def sample_rows(cfg: EncoderTrainConfig, plans: list[SlideTiles]) -> list[dict[str, Any]]:
    """One epoch's worth of training rows for the config's method."""
    rng = np.random.default_rng(cfg.seed)
    if cfg.method == "contrastive":
        return sample_pairs(plans, cfg.tiles, rng)
    if cfg.method == "supervised":
        return sample_labelled(plans, cfg.tiles, rng)
    return sample_tiles(plans, cfg.tiles, rng)


def read_batch(batch: dict[str, np.ndarray], cfg: EncoderTrainConfig,
               rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Read (and augment) the tiles of a batch of rows: `image` (and `image2` for pairs) as uint8 (N, T, T, 3)."""
    from ..encoders.augment import augment_tile
    from ..slides import open_slide_cached

    rng = rng or np.random.default_rng()  # fresh draws every epoch: Ray Data re-runs this map per epoch
    opts = json.dumps(dict(cfg.storage_options), sort_keys=True)
    pairs = "uri2" in batch
    out: dict[str, np.ndarray] = {}
    for suffix in ("", "2") if pairs else ("",):
        images = np.empty((len(batch["uri"]), cfg.tile_size, cfg.tile_size, 3), np.uint8)
        for k in range(len(images)):
            mpp = float(batch[f"mpp{suffix}"][k])
            slide = open_slide_cached(str(batch[f"uri{suffix}"][k]), opts, None if math.isnan(mpp) else mpp)
            tile = slide.read_region(int(batch[f"x{suffix}"][k]), int(batch[f"y{suffix}"][k]), cfg.tile_size,
                                     cfg.tile_size, cfg.mpp)
            images[k] = augment_tile(tile, rng) if (pairs or cfg.augment) else tile
        out[f"image{suffix}"] = images
    for key in ("same", "label"):
        if key in batch:
            out[key] = np.asarray(batch[key], np.int64)
    return out


def to_columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows as a column batch (what Ray Data hands map_batches), for reading in this process."""
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def tile_dataset(cfg: EncoderTrainConfig, rows: list[dict[str, Any]]):
    """The training stream: rows -> read + augment in Ray Data CPU tasks, block order shuffled every epoch."""
    import ray

    blocks = max(1, min(len(rows) // cfg.batch_size, 200))
    return (ray.data.from_items(rows, override_num_blocks=blocks)
            .randomize_block_order()
            .map_batches(read_batch, fn_kwargs={"cfg": cfg}, batch_size=cfg.batch_size, batch_format="numpy",
                         num_cpus=1))
