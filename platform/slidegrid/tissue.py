"""Tissue masks from a thumbnail, the DigiPathAI way (papers/digipathai-ensemble-segmentation-framework.txt,
"Tissue mask generation" and its CAMELYON-specific pre-processing): near-black pixels to white, 7x7 median
blur, Otsu on the HSV saturation channel, then morphological clean-up sized in µm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_holes, remove_small_objects

from .errors import ConfigError

if TYPE_CHECKING:
    from .slides import Slide


@dataclass(frozen=True)
class TissueConfig:
    """Tissue detection settings; areas in µm² and lengths in µm so they hold at any thumbnail mpp."""

    mpp: float = 8.0
    median_kernel: int = 7
    black_threshold: int = 50
    min_saturation: float = 0.05
    closing_um: float = 50.0
    min_object_um2: float = 20000.0
    min_hole_um2: float = 20000.0  # glass enclosed by tissue and smaller than this is filled (0: none)

    def __post_init__(self) -> None:
        if not 0.1 <= self.mpp <= 1000:
            raise ConfigError("--tissue-mpp", f"{self.mpp} µm/px is outside 0.1..1000")
        if self.median_kernel < 1 or self.median_kernel % 2 == 0:
            raise ConfigError("median_kernel", "must be a positive odd number")
        if not 0 <= self.black_threshold <= 255:
            raise ConfigError("black_threshold", "must be within 0..255")
        if not 0 <= self.min_saturation < 1:
            raise ConfigError("min_saturation", "must be within [0, 1)")
        if min(self.closing_um, self.min_object_um2, self.min_hole_um2) < 0:
            raise ConfigError("tissue config", "sizes must be non-negative")


@dataclass
class TissueMask:
    """A boolean tissue mask and the µm per pixel it was computed at."""

    mask: np.ndarray
    mpp: float

    @property
    def fraction(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def tissue_mask_from_rgb(rgb: np.ndarray, mpp: float, config: TissueConfig = TissueConfig()) -> TissueMask:
    """Tissue mask of an RGB thumbnail taken at `mpp` µm/px."""
    img = np.ascontiguousarray(rgb[..., :3]).copy()
    # Black scanner borders / pen would win Otsu's threshold: make them glass first (DigiPathAI, CAMELYON17).
    img[(img < config.black_threshold).all(axis=-1)] = 255
    if min(img.shape[:2]) >= config.median_kernel:
        img = cv2.medianBlur(img, config.median_kernel)
    sat = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32) / 255.0
    floor = config.min_saturation
    # All-glass slides have a tiny saturation range and Otsu would split noise: require a real contrast.
    thr = threshold_otsu(sat) if float(sat.max() - sat.min()) > floor else 1.0
    mask = sat > max(thr, floor)
    px_area = mpp * mpp
    radius = int(round(config.closing_um / mpp / 2))
    if radius > 0 and mask.any():
        # Pad with the edge so that closing does not erode tissue cut by the slide border.
        padded = np.pad(mask, radius + 1, mode="edge")
        mask = ndimage.binary_closing(padded, structure=_disk(radius))[radius + 1:-radius - 1, radius + 1:-radius - 1]
    if config.min_hole_um2 > 0:
        mask = remove_small_holes(mask, max_size=max(0, int(config.min_hole_um2 / px_area) - 1))
    if config.min_object_um2 > 0:
        mask = remove_small_objects(mask, max_size=max(0, int(config.min_object_um2 / px_area) - 1))
    return TissueMask(mask=mask.astype(bool), mpp=mpp)


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def tissue_mask(slide: Slide, config: TissueConfig = TissueConfig()) -> TissueMask:
    """Tissue mask of a slide from its thumbnail at config.mpp (read from the smallest sufficient level)."""
    mpp = max(config.mpp, slide.mpp)
    return tissue_mask_from_rgb(slide.thumbnail(mpp), mpp, config)
