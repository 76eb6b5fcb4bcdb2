"""Features of a tumour probability heatmap for lymph-node metastasis typing
(papers/digipathai-ensemble-segmentation-framework.txt, "pN-staging pipeline", Table 5).

The heatmap is binarised at p >= 0.5 and p >= 0.9 (inside the tissue when a tissue mask is given); the
8-connected regions are measured with scikit-image's regionprops. Every feature is computed at both
thresholds; `TABLE5_FEATURES` names the paper's 32. With the heatmap's `mpp`, lengths are in µm and areas
in µm² (the metastasis size classes are physical: 0.2 mm, 2 mm); without it, in heatmap pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from skimage.measure import label, regionprops

from ..errors import ConfigError

THRESHOLDS = (0.5, 0.9)
REGION_PROPS = ("area", "perimeter", "eccentricity", "extent", "solidity")
STATISTICS = ("max", "mean", "var", "skew", "kurt")
# Unit of each region property: 2 = area, 1 = length, 0 = unitless.
_POWER = {"area": 2, "perimeter": 1, "eccentricity": 0, "extent": 0, "solidity": 0}


def _name(threshold: float, feature: str) -> str:
    return f"p{threshold:g}_{feature}"


TABLE5_FEATURES: tuple[str, ...] = (
    _name(0.9, "largest_major_axis"), _name(0.5, "largest_major_axis"),  # 1
    _name(0.5, "largest_area"),  # 2
    _name(0.9, "tumour_tissue_ratio"),  # 3
    _name(0.9, "tumour_area"),  # 4: count of non-zero pixels
    *(_name(0.9, f"{prop}_{stat}") for prop in REGION_PROPS for stat in STATISTICS),  # 5-9
    _name(0.9, "mean_confidence"),  # 10
    _name(0.9, "region_count"),  # 11
)


def _statistics(values: np.ndarray) -> dict[str, float]:
    """Max, mean, variance, skewness, kurtosis; 0 where undefined (no regions, or all equal)."""
    if len(values) == 0:
        return dict.fromkeys(STATISTICS, 0.0)
    out = {"max": values.max(), "mean": values.mean(), "var": values.var()}
    spread = np.ptp(values) > 0
    out["skew"] = stats.skew(values) if spread else 0.0
    out["kurt"] = stats.kurtosis(values) if spread else 0.0
    return {k: float(v) for k, v in out.items()}


def _at_threshold(prob: np.ndarray, tissue: np.ndarray, threshold: float, mpp: float) -> dict[str, float]:
    tumour = (prob >= threshold) & tissue
    regions = regionprops(label(tumour, connectivity=2), intensity_image=prob)
    props = {p: np.array([getattr(r, p) for r in regions], float) * mpp ** _POWER[p] for p in REGION_PROPS}
    largest = max(regions, key=lambda r: r.area, default=None)
    out = {
        "largest_major_axis": largest.axis_major_length * mpp if largest is not None else 0.0,
        "largest_area": largest.area * mpp**2 if largest is not None else 0.0,
        "tumour_tissue_ratio": tumour.sum() / max(tissue.sum(), 1),
        "tumour_area": tumour.sum() * mpp**2,
        "mean_confidence": float(np.mean([r.intensity_mean for r in regions])) if regions else 0.0,
        "region_count": len(regions),
    }
    for prop, values in props.items():
        out.update({f"{prop}_{stat}": v for stat, v in _statistics(values).items()})
    return {_name(threshold, k): float(v) for k, v in out.items()}


def heatmap_features(prob: np.ndarray, tissue: np.ndarray | None = None, mpp: float | None = None,
                     thresholds: tuple[float, ...] = THRESHOLDS) -> dict[str, float]:
    """Flat dict of named features of an (H, W) probability heatmap; `tissue` is a same-shape bool mask."""
    prob = np.asarray(prob, np.float32)
    if prob.ndim != 2:
        raise ConfigError("heatmap", f"expected an (H, W) probability map, got shape {prob.shape}")
    if tissue is None:
        tissue = np.ones(prob.shape, bool)
    elif np.shape(tissue) != prob.shape:
        raise ConfigError("tissue mask", f"shape {np.shape(tissue)} differs from the heatmap's {prob.shape}")
    scale = 1.0 if mpp is None else float(mpp)
    out: dict[str, float] = {}
    for t in thresholds:
        out.update(_at_threshold(prob, np.asarray(tissue, bool), t, scale))
    return out
