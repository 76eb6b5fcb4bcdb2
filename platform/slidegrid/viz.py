"""Pictures people look at: masks and heatmaps over slide thumbnails, saved as PNG."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from .io.storage import atomic_write


def _fit(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if mask.shape[:2] == shape[:2]:
        return mask
    return cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 0),
            alpha: float = 0.4) -> np.ndarray:
    """The mask tinted over the image, with its contour drawn."""
    m = _fit(mask, rgb.shape) > 0
    out = rgb.copy()
    out[m] = (out[m] * (1 - alpha) + np.array(color) * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def heatmap_overlay(rgb: np.ndarray, prob: np.ndarray, alpha: float = 0.5,
                    colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Probabilities in [0, 1] as a colour map over the image (transparent where the value is 0 or NaN)."""
    p = np.clip(np.nan_to_num(_fit(prob.astype(np.float32), rgb.shape)), 0, 1)
    colour = cv2.applyColorMap((p * 255).astype(np.uint8), colormap)[..., ::-1]
    a = (alpha * (p > 0))[..., None]
    return (rgb * (1 - a) + colour * a).astype(np.uint8)


def save_png(image: np.ndarray, uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write an RGB (or grey) array as PNG, atomically, locally or to object storage."""
    arr = image if image.ndim == 2 else np.ascontiguousarray(image[..., ::-1])
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise ValueError(f"PNG encoding failed for {uri}")
    with atomic_write(uri, storage_options) as f:
        f.write(buf.tobytes())
