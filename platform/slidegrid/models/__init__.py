"""Models behind one registry: whole-slide aggregators on grids and segmentation networks on pixels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ConfigError

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add a model: factory(in_channels, n_outputs, **kwargs) -> nn.Module."""
    _FACTORIES[name] = factory


def build_model(name: str, in_channels: int, n_outputs: int, **kwargs: Any) -> nn.Module:
    """Instantiate a registered model; unknown names or options are a ConfigError."""
    if name not in _FACTORIES:
        raise ConfigError("--model", f"unknown model {name!r}; choose one of {', '.join(sorted(_FACTORIES))}")
    try:
        return _FACTORIES[name](in_channels, n_outputs, **kwargs)
    except TypeError as exc:
        raise ConfigError("model_kwargs", f"{name}: {exc}") from None


def _register_aggregators() -> None:
    from .attention import AttentionClassifier
    from .nic_cnn import NICCNN
    from .ran import RANCNN, RANLSTM

    register_model("attention", AttentionClassifier)
    register_model("nic-cnn", NICCNN)
    register_model("ran-cnn", RANCNN)
    register_model("ran-lstm", RANLSTM)


_register_aggregators()


def _register_segmentation() -> None:
    from .mrn import mrn_bilinear, mrn_transposed
    from .segmentation import register_segmentation_models

    register_segmentation_models(register_model)
    register_model("mrn-bilinear", mrn_bilinear)
    register_model("mrn-transposed", mrn_transposed)


_register_segmentation()


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
