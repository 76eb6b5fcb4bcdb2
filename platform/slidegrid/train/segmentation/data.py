"""Segmentation training patches streamed from slides with Ray Data, never written to disk
(papers/digipathai-ensemble-segmentation-framework.txt, "Patch coordinate extraction", "Data augmentation").

    cohort rows ─► per slide: tissue mask + tumour mask ─► class-balanced patch positions (any tumour pixel
    = tumour patch) ─► random coordinate perturbation (radius 128 level-0 px) ─► read image + mask at the
    patch mpp (MRN: concentric tiles at several mpps) ─► augmentation ─► rows {image, mask}

Normalization (ImageNet mean/std, after augmentation as in the paper) happens on tensors in the training
loop and in slide inference, through `normalize`, so both see the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from ...errors import ConfigError, SlidegridError
from ...geometry.tiling import perturb, read_concentric, sample_patches
from ...geometry.tissue import tissue_mask
from ...io.annotations import Annotation, rasterize, read_annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Patches read per Ray Data row group: enough to amortize a task, few enough to spread a slide over workers.
PATCHES_PER_CHUNK = 16


@dataclass(frozen=True)
class PatchSpec:
    """Where and how patches are cut: side and mpp (highest resolution first for MRN), sampling options."""

    patch_size: int = 256
    mpps: tuple[float, ...] = (0.5,)
    perturb_radius: float = 128.0  # level-0 px
    positive_fraction: float = 0.5
    label_mpp: float = 2.0  # resolution of the tumour mask the sampler looks at
    augment: bool = True

    def __post_init__(self) -> None:
        if self.patch_size < 8:
            raise ConfigError("--patch-size", f"{self.patch_size} px is too small (at least 8)")
        if not self.mpps or any(not 0.05 <= m <= 1000 for m in self.mpps):
            raise ConfigError("--mpp", f"{self.mpps} must be one or more resolutions within 0.05..1000 µm/px")
        if self.perturb_radius < 0:
            raise ConfigError("perturb_radius", "must be >= 0 level-0 pixels")
        if not 0 <= self.positive_fraction <= 1:
            raise ConfigError("positive_fraction", "must be within 0..1")

    @property
    def mpp(self) -> float:
        """The resolution the mask (the model's target) is at: the first, highest one."""
        return self.mpps[0]


@dataclass(frozen=True)
class ColourJitter:
    """The paper's maximum deltas: brightness 64/255, contrast 0.75, saturation 0.25, hue 0.04."""

    brightness: float = 64.0 / 255.0
    contrast: float = 0.75
    saturation: float = 0.25
    hue: float = 0.04
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)


def augment(images: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
            jitter: ColourJitter = ColourJitter()) -> tuple[np.ndarray, np.ndarray]:
    """Flips, 90° rotations, Gaussian blur and colour jitter of (J, S, S, 3) uint8 images (one geometry and
    one stain change for all J resolutions, so concentric tiles stay aligned) and their (S, S) mask."""
    k = int(rng.integers(4))
    images, mask = np.rot90(images, k, axes=(1, 2)), np.rot90(mask, k)
    if rng.random() < 0.5:
        images, mask = images[:, :, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        images, mask = images[:, ::-1], mask[::-1]
    x = np.ascontiguousarray(images).astype(np.float32) / 255.0
    if rng.random() < jitter.blur_probability:
        sigma = float(rng.uniform(*jitter.blur_sigma))
        x = np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in x])
    x = x + rng.uniform(-jitter.brightness, jitter.brightness)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * rng.uniform(1 - jitter.contrast, 1 + jitter.contrast) + mean
    hsv = np.stack([cv2.cvtColor(np.clip(im, 0, 1), cv2.COLOR_RGB2HSV) for im in x])  # H in degrees
    hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-jitter.hue, jitter.hue)) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1 - jitter.saturation, 1 + jitter.saturation), 0, 1)
    x = np.stack([cv2.cvtColor(im, cv2.COLOR_HSV2RGB) for im in hsv])
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8), np.ascontiguousarray(mask)


def normalize(images: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """uint8 (..., S, S, 3) -> float32 (..., 3, S, S) standardized per channel."""
    x = (np.asarray(images, np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def window_mask(annotations: Sequence[Annotation], x: int, y: int, size: int, slide_mpp: float,
                mpp: float) -> np.ndarray:
    """(size, size) uint8 tumour mask of the square whose level-0 top-left is (x, y), at `mpp`."""
    size0 = size * mpp / slide_mpp
    side = max(1, round(size0))
    shifted = [Annotation(a.exterior - (x, y), [h - (x, y) for h in a.holes], a.label) for a in annotations]
    mask = rasterize(shifted, (side, side), slide_mpp, mpp).astype(np.uint8)
    if mask.shape != (size, size):
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return mask


@lru_cache(maxsize=8)
def _slide_context(uri: str, annotation: str, options_json: str, mpp_override: float | None, label_mpp: float):
    """Per worker process: the open slide, its tissue mask, its polygons and their mask at `label_mpp`."""
    from ...io.slides import open_slide

    opts = json.loads(options_json)
    slide = open_slide(uri, opts, mpp_override)
    polygons = read_annotations(annotation, opts) if annotation else []
    label = rasterize(polygons, slide.info.dimensions, slide.mpp, label_mpp)
    return slide, tissue_mask(slide), polygons, label


def read_patches(item: Mapping[str, Any], spec: PatchSpec, options_json: str = "{}") -> list[dict[str, Any]]:
    """Ray Data flat_map: `item["n"]` patches of one slide as rows {slide_id, image (J, S, S, 3), mask (S, S),
    tumour}. `item["seed"]` None draws fresh positions on every pass (every epoch), an int repeats them."""
    uri, sid = str(item["uri"]), str(item["slide_id"])
    override = item.get("mpp")
    try:
        slide, tissue, polygons, label = _slide_context(uri, str(item.get("annotation") or ""), options_json,
                                                        None if override is None else float(override),
                                                        spec.label_mpp)
    except SlidegridError:
        raise
    except Exception as exc:
        raise ConfigError(uri, f"cannot cut training patches ({type(exc).__name__}: {exc})") from exc
    seed = item.get("seed")
    rng = np.random.default_rng(None if seed is None else int(seed))
    s = spec.patch_size
    x, y, is_tumour = sample_patches(label, spec.label_mpp, tissue, slide.mpp, slide.info.dimensions,
                                     int(item["n"]), s, spec.mpp, rng, spec.positive_fraction)
    if spec.perturb_radius:
        x, y = perturb(x, y, spec.perturb_radius, rng)
    half0 = s * spec.mpp / slide.mpp / 2
    rows = []
    for xi, yi, tumour in zip(x.tolist(), y.tolist(), is_tumour.tolist()):
        images = read_concentric(slide, xi + half0, yi + half0, spec.mpps, s)
        mask = window_mask(polygons, xi, yi, s, slide.mpp, spec.mpp)
        if spec.augment:
            images, mask = augment(images, mask, rng)
        rows.append({"slide_id": sid, "image": images if len(spec.mpps) > 1 else images[0], "mask": mask,
                     "tumour": bool(tumour)})
    return rows


def patch_items(records: Sequence[Mapping[str, Any]], per_slide: int, seed: int | None) -> list[dict[str, Any]]:
    """Work items of `PATCHES_PER_CHUNK` patches each, `per_slide` patches per slide record."""
    items = []
    for i, r in enumerate(records):
        for j, start in enumerate(range(0, per_slide, PATCHES_PER_CHUNK)):
            items.append({"slide_id": r["slide_id"], "uri": r["uri"], "annotation": r.get("annotation") or "",
                          "mpp": r.get("mpp"), "n": min(PATCHES_PER_CHUNK, per_slide - start),
                          "seed": None if seed is None else seed * 100_003 + i * 1_009 + j})
    return items


def patch_dataset(records: Sequence[Mapping[str, Any]], spec: PatchSpec, per_slide: int, seed: int | None,
                  storage_options: Mapping[str, Any] | None = None):
    """A Ray Dataset of training (or, with a seed and no augmentation, validation) patches."""
    import ray.data

    if per_slide < 1:
        raise ConfigError("--patches-per-slide", "must be at least 1")
    items = patch_items(records, per_slide, seed)
    if not items:
        raise ConfigError("cohort", "no slides to cut patches from")
    opts = json.dumps(dict(storage_options or {}), sort_keys=True)
    return (ray.data.from_items(items, override_num_blocks=len(items))
            .flat_map(read_patches, fn_kwargs={"spec": spec, "options_json": opts}, num_cpus=1))
