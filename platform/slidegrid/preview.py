"""Seeing a grid: its first three principal components as RGB, beside the slide's thumbnail."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from .io.grids import Grid


def pca_rgb(grid: Grid) -> np.ndarray:
    """(H, W, 3) uint8: each kept cell coloured by the first 3 principal components of the embeddings."""
    h, w = grid.shape
    out = np.zeros((h, w, 3), np.uint8)
    emb = grid.embedding.astype(np.float64)
    if len(emb) == 0:
        return out
    centred = emb - emb.mean(axis=0)
    k = min(3, centred.shape[1], len(emb))
    # SVD of the (N, C) matrix: rows of vt are the principal axes.
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = centred @ vt[:k].T
    lo, hi = np.percentile(pcs, 1, axis=0), np.percentile(pcs, 99, axis=0)
    scaled = np.clip((pcs - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
    rgb = np.zeros((len(emb), 3))
    rgb[:, :k] = scaled
    out[grid.row, grid.col] = (rgb * 255).astype(np.uint8)
    return out


def grid_preview(grid: Grid, storage_options: Mapping[str, Any] | None = None, height: int = 512) -> np.ndarray:
    """Slide thumbnail (left) and PCA grid (right) at the same height, as one RGB image."""
    from .io.slides import open_slide

    meta = grid.meta
    pca = pca_rgb(grid)
    h, w = grid.shape
    scale = height / max(h, 1)
    right = cv2.resize(pca, (max(1, round(w * scale)), height), interpolation=cv2.INTER_NEAREST)
    with open_slide(meta["source_uri"], storage_options, meta.get("mpp_override"), meta.get("reader", "auto")) as slide:
        H, mpp_y = slide.info.dimensions[1], slide.mpp_xy[1]
        thumb = slide.thumbnail(max(mpp_y * H / height, *slide.mpp_xy))
    left = cv2.resize(thumb, (max(1, round(thumb.shape[1] * height / thumb.shape[0])), height),
                      interpolation=cv2.INTER_AREA)
    gap = np.full((height, 8, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)
