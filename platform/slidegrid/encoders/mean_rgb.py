"""NIC's baseline encoder (papers/nic-neural-image-compression.txt §4.3): the mean colour of each tile."""

from __future__ import annotations

import numpy as np

from .base import Encoder


class MeanRGBEncoder(Encoder):
    """Embedding = per-channel mean of the tile, scaled to [0, 1] (C = 3)."""

    name = "mean-rgb"
    dim = 3
    light = True

    def encode(self, tiles: np.ndarray) -> np.ndarray:
        """Mean over the pixels of each tile."""
        n = tiles.shape[0]
        # Sum in float64 so the result equals an independent numpy mean bit for bit.
        return (tiles.reshape(n, -1, 3).mean(axis=1, dtype=np.float64) / 255.0).astype(np.float32)
