"""Models behind one registry: whole-slide aggregators on grids and segmentation networks on pixels."""

from __future__ import annotations

from typing import Any

from torch import nn

# Each model module registers itself on import (its card sits next to its class).
from . import attention, mrn, nic_cnn, ran, segmentation  # noqa: F401
from .registry import ModelCard, build_model, model_card, register_model, registered

__all__ = ["GridStandardizer", "ModelCard", "build_model", "model_card", "register_model", "registered"]


class GridStandardizer(nn.Module):
    """Wraps a grid model with per-channel standardization of the embeddings (statistics of the training
    grids), so the scaling travels with the weights; empty cells stay exactly zero."""

    def __init__(self, inner: nn.Module, mean: Any, std: Any) -> None:
        super().__init__()
        import torch

        self.inner = inner
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6).view(1, -1, 1, 1))

    @property
    def per_cell(self) -> bool:
        """Whether the wrapped model predicts per cell."""
        return bool(getattr(self.inner, "per_cell", False))

    def _scale(self, x, mask):
        z = (x - self.mean) / self.std
        return z if mask is None else z * mask[:, None].to(z.dtype)

    def forward(self, x, mask=None):
        """Standardize, then run the wrapped model."""
        return self.inner(self._scale(x, mask), mask)

    def attention_maps(self, x, mask=None):
        """The wrapped attention model's maps on standardized input."""
        return self.inner.attention_maps(self._scale(x, mask), mask)
