"""Viable tumour burden for liver cancer (PAIP 2019; papers/digipathai-ensemble-segmentation-framework.txt,
"Tumour burden estimation for PAIP dataset").

Steps of the paper: clean the predicted viable-tumour mask with morphology (opening and dropping small
components remove false positives, small holes are filled); take the smallest convex hull containing all
viable tumour; the whole tumour is that hull intersected with the tissue mask; burden = viable area / whole
tumour area. The paper gives no sizes for the clean-up; the defaults are in mask pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import morphology

from ..errors import ConfigError


@dataclass(frozen=True)
class CleanupConfig:
    """Binarisation threshold and morphological clean-up sizes, in pixels of the mask."""

    threshold: float = 0.5
    opening_radius: int = 1
    max_false_positive: int = 64
    max_hole: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ConfigError("--threshold", f"{self.threshold} is not within (0, 1)")
        if min(self.opening_radius, self.max_false_positive, self.max_hole) < 0:
            raise ConfigError("cleanup", "opening radius and size limits must be >= 0 pixels")


@dataclass
class TumourBurden:
    """The cleaned viable-tumour mask, the whole-tumour mask and their areas (pixels)."""

    viable: np.ndarray
    whole: np.ndarray

    @property
    def viable_area(self) -> int:
        """Viable tumour pixels."""
        return int(self.viable.sum())

    @property
    def whole_area(self) -> int:
        """Whole tumour pixels."""
        return int(self.whole.sum())

    @property
    def burden(self) -> float:
        """Viable / whole tumour area; 0 without tumour."""
        return self.viable_area / self.whole_area if self.whole_area else 0.0


def clean_viable(viable: np.ndarray, config: CleanupConfig = CleanupConfig()) -> np.ndarray:
    """Binarise (probabilities at `threshold`) and clean a viable-tumour mask."""
    mask = np.asarray(viable)
    mask = mask >= config.threshold if mask.dtype.kind == "f" else mask.astype(bool)
    if config.opening_radius:
        mask = morphology.opening(mask, morphology.disk(config.opening_radius))
    if config.max_false_positive:
        mask = morphology.remove_small_objects(mask, max_size=config.max_false_positive)
    if config.max_hole:
        mask = morphology.remove_small_holes(mask, max_size=config.max_hole)
    return mask


def whole_tumour(viable: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Convex hull of all viable tumour, intersected with the tissue mask."""
    viable = np.asarray(viable, bool)
    if not viable.any():
        return np.zeros_like(viable)
    return morphology.convex_hull_image(viable) & np.asarray(tissue, bool)


def tumour_burden(viable: np.ndarray, tissue: np.ndarray, config: CleanupConfig = CleanupConfig()) -> TumourBurden:
    """Viable tumour burden from a viable-tumour probability map or mask and a same-shape tissue mask."""
    if np.shape(viable) != np.shape(tissue) or np.ndim(viable) != 2:
        raise ConfigError("tissue mask", f"needs the viable mask's 2-D shape {np.shape(viable)}, "
                          f"got {np.shape(tissue)}")
    tissue = np.asarray(tissue, bool)
    cleaned = clean_viable(viable, config) & tissue
    return TumourBurden(viable=cleaned, whole=whole_tumour(cleaned, tissue) | cleaned)
