"""Small real image files the reader tests share."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile


def smooth_rgb(h: int, w: int, seed: int = 0, sigma: float = 6, low: int = 30, span: int = 200) -> np.ndarray:
    """A smooth, tissue-like RGB image (blurred noise scaled to low..low+span), so resampling errors are
    measurable but small."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.float32), (0, 0), sigma)
    img = (img - img.min()) / (img.max() - img.min()) * span + low
    return img.astype(np.uint8)


def write_cut_short_jpeg(path: Path) -> Path:
    """A 512 x 512 tiled JPEG TIFF at 0.5 µm/px whose tile (1, 1) was cut short (the writer stopped half-way)."""
    tifffile.imwrite(path, smooth_rgb(512, 512), tile=(256, 256), compression="jpeg",
                     resolution=(20000, 20000), resolutionunit="CENTIMETER")
    with tifffile.TiffFile(path, mode="r+") as t:
        counts = list(t.pages[0].databytecounts)
        counts[3] //= 2
        t.pages[0].tags["TileByteCounts"].overwrite(counts)
    return path
