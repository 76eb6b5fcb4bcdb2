"""What every tile encoder is: a torch-free or torch model plus the preprocessing that travels with it."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EncoderSpec:
    """How to build an encoder: registry name, weights source and runtime placement."""

    name: str
    weights: str | None = None  # local file, "random", or an MLflow model URI (models:/..., runs:/...)
    device: str = "cpu"  # "cpu" or "cuda"
    amp: str = "bf16"  # autocast dtype on GPU: "bf16", "fp16" or "off"; CPU always runs fp32
    torch_compile: bool = False  # torch.compile the module (torch models; first batches wait for compilation)


class Encoder(ABC):
    """Maps a batch of RGB uint8 tiles (N, H, W, 3) to embeddings (N, C) float32."""

    name: str
    dim: int
    # True when encoding costs next to nothing (runs fine beside the decoders on a shared CPU).
    light: bool = False
    # The tile side (px) and µm/px the weights were trained on; None where any geometry is fine.
    tile_size: int | None = None
    mpp: float | None = None

    @abstractmethod
    def encode(self, tiles: np.ndarray) -> np.ndarray:
        """Embed a batch of tiles."""

    @property
    def weights_digest(self) -> str:
        """A short digest identifying the weights (part of the grid settings hash)."""
        return "none"


def file_digest(data: bytes) -> str:
    """sha256 prefix of some bytes, used to identify weights."""
    return hashlib.sha256(data).hexdigest()[:16]
