"""Tile datasets for encoder training, streamed from slides with Ray Data (papers/nic-neural-image-
compression.txt §2.2 and §4.3 for the unsupervised and contrastive datasets; RAN §3 and DigiPathAI's patch
sampler for the supervised one).

    slides ─► plan (one Ray task per slide: tissue mask, tile grid, class-balanced annotated patches)
           ─► sample (driver, numpy: random tissue tiles | same/different pairs | balanced labelled tiles)
           ─► read + augment (Ray Data map_batches, CPU tasks) ─► the Ray Train workers' shards

Contrastive pairs (NIC §2.2): half *same* (one location, two independent strong augmentations) and half
*different*, of which 75% are the non-overlapping adjacent tile (a 4-neighbour on the tile grid) and 25% a
tile of another slide.

A labelled patch set (`cfg.train_split`: PatchCamelyon's `ROOT/<split>/<class>/`, encoders/patches.py) is the
other source, on the same stream: `plan_patches` lists the training and validation splits instead of planning
slides, `sample_rows` draws patch rows (`path` instead of `uri, x, y`), `read_batch` decodes the files instead of
reading slide regions, with the same augmentations, into the same Ray Data map. Patches carry no slide or
position, so NIC's adjacent-tile pairs do not exist: a *same* pair is two random crops (side drawn from
`cfg.crop_range`, resized to the tile size) of one patch, each under its own strong augmentation (§2.2), and a
*different* pair two such crops of two different patches. VAE and BiGAN take every training patch once per
epoch (labels ignored); `supervised` takes class-balanced labelled patches.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...geometry.tiling import sample_patches, tile_grid
from ...geometry.tissue import tissue_mask
from ...io.archive import SlideRecord, list_archive
from .config import EncoderTrainConfig

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
    from ...io.annotations import rasterize, read_annotations

    polygons = read_annotations(rec.annotation, storage_options) if rec.annotation else []
    return rasterize(polygons, slide.info.dimensions, slide.mpp, mask_mpp)


def plan_slide(rec: SlideRecord, cfg: EncoderTrainConfig, patches: int, seed: int) -> SlideTiles:
    """Tissue mask and tile grid of one slide, and `patches` class-balanced labelled patches (0: none)."""
    from ...io.slides import open_slide

    with open_slide(rec.uri, cfg.storage_options, rec.mpp) as slide:
        tissue = tissue_mask(slide, cfg.tissue)
        grid = tile_grid(slide.info.dimensions, slide.mpp_xy, cfg.grid,
                         tissue)
        out = SlideTiles(rec.slide_id, rec.uri, rec.mpp, grid.row.astype(np.int64), grid.col.astype(np.int64),
                         grid.x, grid.y)
        if patches:
            # At least 8 mask pixels along a tile side, so "touches tumour" is decided finely enough.
            mask_mpp = min(cfg.tissue.mpp, cfg.tile_size * cfg.mpp / 8)
            label = _label_mask(rec, slide, mask_mpp, cfg.storage_options)
            px, py, is_tumour = sample_patches(label, mask_mpp, tissue, slide.mpp, slide.info.dimensions, patches,
                                               cfg.tile_size, cfg.mpp, np.random.default_rng(seed))
            out.patch_x, out.patch_y, out.patch_label = px, py, is_tumour.astype(np.int64)
    return out


@dataclass
class PatchTiles:
    """The patches of one split of a patch set that an encoder trains (or validates) on: absolute file paths
    and (N,) int64 labels (the class folders' labels; only `supervised` uses them)."""

    split: str
    paths: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


def plan_patches(cfg: EncoderTrainConfig) -> tuple[PatchTiles, PatchTiles | None]:
    """The training split and the validation split (None without `cfg.val_split`) of the patch set
    `cfg.input`; ConfigError for a split that is not there, or (supervised) a split without two classes."""
    from ...encoders.patches import read_patch_set

    assert cfg.train_split is not None
    data = read_patch_set(cfg.input, cfg.mpp)
    out: list[PatchTiles | None] = []
    for split, flag in ((cfg.train_split, "--train-split"), (cfg.val_split, "--val-split")):
        if split is None:
            out.append(None)
            continue
        idx = data.split(split, flag)
        labels = data.labels[idx]
        if cfg.rows == "labelled":
            classes = sorted(set(data.labels.tolist()))
            if len(classes) != 2 or len(set(labels.tolist())) != 2:
                raise ConfigError(data.root, f"supervised training needs the same two classes in every split; split "
                                             f"{split!r} has {', '.join(data.classes[v] for v in sorted(set(labels.tolist())))}"
                                             f" of {', '.join(data.classes[v] for v in classes)}")
            labels = np.searchsorted(classes, labels).astype(np.int64)  # the larger label (tumour) is class 1
        out.append(PatchTiles(split, [data.paths[i] for i in idx], labels))
    train, val = out
    assert train is not None
    return train, val


def _patch_rows(p: PatchTiles, kind: str, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """n rows of patch files of the method's rows `kind`: "pairs" (`path`, `path2`, `same`, `kind`),
    "labelled" (class-balanced, with `label`), "tiles" (every patch once per len(p) rows in random order, labels
    ignored)."""
    if kind == "pairs":
        if len(p) < 2:
            raise ConfigError(p.split, "contrastive training needs at least 2 patches (a *different* pair)")
        n_same = int(round(n * SAME_FRACTION))
        a = rng.integers(len(p), size=n)
        b = (a + rng.integers(1, len(p), size=n)) % len(p)  # any other patch, uniformly
        b[:n_same] = a[:n_same]
        rows = [{"path": p.paths[i], "path2": p.paths[j], "same": int(k < n_same),
                 "kind": "same" if k < n_same else "other-patch"} for k, (i, j) in enumerate(zip(a, b))]
        rng.shuffle(rows)
        return rows
    if kind == "labelled":
        halves = []
        for label, want in ((1, n // 2), (0, n - n // 2)):
            pool = np.flatnonzero(p.labels == label)  # plan_patches: labels 0 and 1, both present
            reps = -(-want // len(pool))
            halves += [int(i) for i in np.concatenate([rng.permutation(pool) for _ in range(reps)])[:want]]
        order = rng.permutation(halves)
        return [{"path": p.paths[i], "label": int(p.labels[i])} for i in order]
    order = np.concatenate([rng.permutation(len(p)) for _ in range(-(-n // len(p)))])[:n]
    return [{"path": p.paths[i]} for i in order]


def list_input(cfg: EncoderTrainConfig) -> list[SlideRecord]:
    """The slides of the archive `cfg.input`; when it cannot be listed as one but is a patch set, a ConfigError
    saying to pass --train-split (before any Ray start)."""
    try:
        return list_archive(cfg.input, cfg.storage_options)
    except ConfigError:
        _refuse_patch_set(cfg)
        raise


def plan_archive(cfg: EncoderTrainConfig, use_ray: bool = True,
                 records: list[SlideRecord] | None = None) -> list[SlideTiles]:
    """Plan every slide of the archive (one Ray task each, or in this process); slides without tissue drop out.
    `records`: the archive's listing when the caller has it already (`list_input`)."""
    records = list_input(cfg) if records is None else records
    patches = math.ceil(2 * cfg.tiles / len(records)) if cfg.rows == "labelled" else 0
    if cfg.rows == "labelled" and not any(r.annotation for r in records):
        raise ConfigError(cfg.input, "supervised training needs tumour annotations: a cohort table with an "
                                     "`annotation` column (GeoJSON / ASAP XML per slide)")
    args = [(r, cfg, patches, cfg.seed * 100_003 + i) for i, r in enumerate(records)]
    if use_ray:
        import ray

        from ...runtime import init_ray

        init_ray()
        task = ray.remote(num_cpus=1)(plan_slide)
        plans = ray.get([task.remote(*a) for a in args])
    else:
        plans = [plan_slide(*a) for a in args]
    plans = [p for p in plans if len(p) or len(p.patch_label)]
    if not plans:
        raise ConfigError(cfg.input, f"no slide has tissue tiles of {cfg.tile_size} px at {cfg.mpp} µm/px with "
                                     f"--min-tissue {cfg.grid.min_tissue}")
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


def _refuse_patch_set(cfg: EncoderTrainConfig) -> None:
    """When the archive could not be listed: ConfigError saying so if the input is in fact a patch set."""
    from ...encoders.patches import read_patch_set

    try:
        data = read_patch_set(cfg.input, 1.0)
    except ConfigError:
        return
    splits = data.split_names()
    raise ConfigError("--train-split", f"{cfg.input} is a patch set ({data.layout}, {len(data.paths)} patches"
                                       f"{', splits ' + ', '.join(splits) if splits else ''}), not a slide archive: "
                                       "pass --train-split S (and --val-split V) and --mpp M (PCam: --train-split "
                                       "train --val-split valid --mpp 0.97)")


def sample_rows(cfg: EncoderTrainConfig, plans: list[SlideTiles] | PatchTiles,
                n: int | None = None, seed: int | None = None) -> list[dict[str, Any]]:
    """One epoch's worth of training rows for the config's method (`n`, default cfg.tiles): from planned slides,
    or from the patches of one split (`PatchTiles`: rows name files, see the module docstring)."""
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    if isinstance(plans, PatchTiles):
        return _patch_rows(plans, cfg.rows, n or cfg.tiles, rng)
    if cfg.rows == "pairs":
        return sample_pairs(plans, cfg.tiles, rng)
    if cfg.rows == "labelled":
        return sample_labelled(plans, cfg.tiles, rng)
    return sample_tiles(plans, cfg.tiles, rng)


def random_crop(patch: np.ndarray, side: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A square crop of an (H, H, 3) uint8 patch, its side drawn uniformly from `side` (min, max px) and its
    position uniformly inside the patch, resized back to H x H (bilinear). Any crop of at least 2H/3 px holds the
    patch's middle third, e.g. PCam's labelled centre (the middle 32 of 96 px) for sides 64-96."""
    import cv2

    h = patch.shape[0]
    s = int(rng.integers(side[0], min(side[1], h) + 1))
    y, x = (int(v) for v in rng.integers(0, h - s + 1, size=2))
    crop = np.ascontiguousarray(patch[y:y + s, x:x + s])
    return crop if s == h else cv2.resize(crop, (h, h), interpolation=cv2.INTER_LINEAR)


def _read_patch(path: str, size: int) -> np.ndarray:
    """A patch file as (size, size, 3) uint8; ConfigError naming it when it has another size."""
    from ...encoders.patches import decode_patch

    img = decode_patch(path)
    if img.shape[:2] != (size, size):
        raise ConfigError(path, f"{img.shape[1]}×{img.shape[0]} px; the encoder trains on {size}-px tiles "
                                "(--tile-size): resize the set to one patch size")
    return img


def read_batch(batch: dict[str, np.ndarray], cfg: EncoderTrainConfig, rng: np.random.Generator | None = None,
               augment: bool | None = None) -> dict[str, np.ndarray]:
    """Read (and augment) the tiles of a batch of rows: `image` (and `image2` for pairs) as uint8 (N, T, T, 3).

    Rows of slides (`uri, x, y, mpp`) read a region at cfg.mpp; rows of patch files (`path`) decode the file,
    and a pair's patches are first randomly cropped (cfg.crop_range). Pairs are always augmented, single tiles
    when `augment` (default cfg.augment; validation streams pass False)."""
    from ...encoders.augment import augment_tile
    from ...io.slides import open_slide_cached

    rng = rng or np.random.default_rng()  # fresh draws every epoch: Ray Data re-runs this map per epoch
    opts = json.dumps(dict(cfg.storage_options), sort_keys=True)
    patches = "path" in batch
    pairs = "uri2" in batch or "path2" in batch
    augment = cfg.augment if augment is None else augment
    assert cfg.tile_size is not None and cfg.mpp is not None
    out: dict[str, np.ndarray] = {}
    for suffix in ("", "2") if pairs else ("",):
        images = np.empty((len(batch["path" if patches else "uri"]), cfg.tile_size, cfg.tile_size, 3), np.uint8)
        for k in range(len(images)):
            if patches:
                tile = _read_patch(str(batch[f"path{suffix}"][k]), cfg.tile_size)
                if pairs:  # no neighbours in a patch set: two crops of one patch make a *same* pair
                    tile = random_crop(tile, cfg.crop_range, rng)
            else:
                mpp = float(batch[f"mpp{suffix}"][k])
                slide = open_slide_cached(str(batch[f"uri{suffix}"][k]), opts, None if math.isnan(mpp) else mpp)
                tile = slide.read_region(int(batch[f"x{suffix}"][k]), int(batch[f"y{suffix}"][k]), cfg.tile_size,
                                         cfg.tile_size, cfg.mpp)
            images[k] = augment_tile(tile, rng) if (pairs or augment) else tile
        out[f"image{suffix}"] = images
    for key in ("same", "label"):
        if key in batch:
            out[key] = np.asarray(batch[key], np.int64)
    return out


def to_columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows as a column batch (what Ray Data hands map_batches), for reading in this process."""
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def tile_dataset(cfg: EncoderTrainConfig, rows: list[dict[str, Any]], augment: bool | None = None,
                 shuffle: bool = True):
    """A tile stream: rows -> read + augment in Ray Data CPU tasks, block order shuffled every epoch (training;
    `shuffle=False` and `augment=False` for a validation stream)."""
    import ray

    blocks = max(1, min(len(rows) // cfg.batch_size, 200))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    if shuffle:
        ds = ds.randomize_block_order()
    return ds.map_batches(read_batch, fn_kwargs={"cfg": cfg, "augment": augment}, batch_size=cfg.batch_size,
                          batch_format="numpy", num_cpus=1)


def encoder_datasets(cfg: EncoderTrainConfig, records: list[SlideRecord] | None = None,
                     patches: tuple[PatchTiles, PatchTiles | None] | None = None) -> dict[str, Any]:
    """The Ray Data streams of an encoder run: `train` (and `val` for a patch set with a validation split),
    from planned slides (`records`: the archive's listing, when listed already) or from the patch set's splits
    (`patches`: plan_patches' result, when planned already)."""
    if not cfg.patches:
        return {"train": tile_dataset(cfg, sample_rows(cfg, plan_archive(cfg, records=records)))}
    train, val = patches or plan_patches(cfg)
    out = {"train": tile_dataset(cfg, sample_rows(cfg, train))}
    if val is not None:  # drawn once (seeded), so every epoch is scored on the same validation rows
        n = min(cfg.val_tiles, len(val)) if cfg.rows != "pairs" else cfg.val_tiles
        out["val"] = tile_dataset(cfg, sample_rows(cfg, val, n=n, seed=cfg.seed + 1), augment=False, shuffle=False)
    return out
