"""Strong tile augmentation for encoder training (papers/nic-neural-image-compression.txt §2.2, after its
ref. [26]): rotation, colour, brightness, contrast, zoom, elastic deformation and Gaussian noise. Two draws on
the same tile look substantially different while keeping its structure, which is what makes *same* pairs hard.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentRanges:
    """Ranges each transform draws from (uniformly)."""

    zoom: tuple[float, float] = (0.8, 1.25)
    hue: float = 0.04  # fraction of the hue circle
    saturation: tuple[float, float] = (0.75, 1.25)
    brightness: float = 0.12  # fraction of full scale, added
    contrast: tuple[float, float] = (0.75, 1.3)
    elastic_alpha: float = 0.06  # displacement amplitude as a fraction of the tile side
    elastic_sigma: float = 0.08  # smoothness of the displacement field, fraction of the tile side
    noise: float = 0.04  # max std of the additive noise, fraction of full scale


def _geometry(size: int, rng: np.random.Generator, r: AugmentRanges) -> tuple[np.ndarray, np.ndarray]:
    """Sampling maps for one remap: rotation + flip + zoom about the centre, plus a smooth elastic field."""
    c = (size - 1) / 2
    # Output pixel p samples the input at rot @ p: zoom > 1 samples a smaller area, i.e. magnifies.
    rot = cv2.getRotationMatrix2D((c, c), float(rng.uniform(0, 360)), 1.0 / float(rng.uniform(*r.zoom)))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    map_x = rot[0, 0] * xx + rot[0, 1] * yy + rot[0, 2]
    map_y = rot[1, 0] * xx + rot[1, 1] * yy + rot[1, 2]
    sigma = max(1.0, r.elastic_sigma * size)
    for m in (map_x, map_y):
        field = cv2.GaussianBlur(rng.uniform(-1, 1, (size, size)).astype(np.float32), (0, 0), sigma)
        m += field / (np.abs(field).max() + 1e-6) * (r.elastic_alpha * size)
    return map_x.astype(np.float32), map_y.astype(np.float32)


def augment_tile(tile: np.ndarray, rng: np.random.Generator, ranges: AugmentRanges = AugmentRanges()) -> np.ndarray:
    """One strongly augmented copy of an RGB uint8 tile (same shape)."""
    size = tile.shape[0]
    map_x, map_y = _geometry(size, rng, ranges)
    if rng.random() < 0.5:  # a mirror image: what rotations alone do not reach
        tile = tile[:, ::-1]
    out = cv2.remap(np.ascontiguousarray(tile), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    out = jitter_colour(out, rng, ranges)
    noisy = out + rng.normal(0, rng.uniform(0, ranges.noise) * 255, out.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def jitter_colour(tile: np.ndarray, rng: np.random.Generator, ranges: AugmentRanges = AugmentRanges()) -> np.ndarray:
    """Hue, saturation, contrast and brightness changes of an RGB uint8 tile (stain and scanner variation)."""
    hsv = cv2.cvtColor(tile, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-1, 1) * ranges.hue * 180) % 180
    hsv[..., 1] *= rng.uniform(*ranges.saturation)
    img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    mean = img.mean()
    img = (img - mean) * rng.uniform(*ranges.contrast) + mean + rng.uniform(-1, 1) * ranges.brightness * 255
    return np.clip(img, 0, 255).astype(np.uint8)
