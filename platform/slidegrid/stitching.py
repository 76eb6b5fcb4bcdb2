"""Slide-scale inference mechanics, independent of Ray (papers/digipathai-ensemble-segmentation-framework.txt,
"Inference pipeline" and "Uncertainty analysis", Eqs. 4-5).

- `tile_positions`: overlapping tiles (stride = half a tile by default, the paper's 50 % overlap) covering a
  region, the last row and column included.
- `HeatmapAccumulator`: per-tile probability maps (numpy) averaged where tiles overlap, uniformly or with a
  Gaussian window that trusts tile centres more than their borders, into a down-scaled heatmap.
- `predict_tta` / `ensemble_predict`: test-time augmentation (identity, three rotations, two flips). Each
  transform is applied to the original tile and inverted on its own output; the mean and the variance over
  transforms are the prediction and the aleatoric map (Eq. 4); the variance of the members' means is the
  epistemic map (Eq. 5). Inputs and outputs are torch tensors, class probabilities on dim 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch
from torch import nn

from .errors import ConfigError


def _axis_starts(extent: int, tile: int, stride: int) -> list[int]:
    """Starts 0, stride, 2*stride, ... plus one flush with the far edge, so no pixel is left uncovered."""
    last = max(extent - tile, 0)
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def tile_positions(width: int, height: int, tile: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left (x, y) of tiles covering a width x height region, row by row; a region smaller than a tile
    gets one tile at (0, 0) (the reader pads what lies outside)."""
    stride = stride or max(tile // 2, 1)
    if tile < 1 or stride < 1 or width < 1 or height < 1:
        raise ConfigError("tile/stride", "tile size, stride and region size must be positive")
    if stride > tile:
        raise ConfigError("--stride", f"a stride of {stride} px leaves gaps between {tile}-px tiles")
    return [(x, y) for y in _axis_starts(height, tile, stride) for x in _axis_starts(width, tile, stride)]


@lru_cache(maxsize=16)
def _window(height: int, width: int, weighting: str) -> np.ndarray:
    """Per-pixel weight of a tile: ones, or a Gaussian with sigma = 1/8 of the side (as nnU-Net) floored so
    that border pixels covered by a single tile still count. The floor is per axis, not on the product: along
    a slide's border row every tile's weight is tiny in y, and a floored product would weigh them all alike
    there (seams come back); per axis, the x weights still decide between them."""
    if weighting == "uniform":
        return np.ones((height, width), np.float32)

    def axis(n: int) -> np.ndarray:
        u = np.arange(n) + 0.5 - n / 2
        return np.maximum(np.exp(-0.5 * (u / (n / 8)) ** 2), 1e-3)

    w = np.outer(axis(height), axis(width))
    return (w / w.max()).astype(np.float32)


WEIGHTINGS = ("gaussian", "uniform")


class HeatmapAccumulator:
    """Stitches probability tiles into a heatmap of `shape` (..., H, W) where one heatmap pixel spans `scale`
    input pixels: accumulates sum(w * p) and sum(w), divides in `result()`."""

    def __init__(self, shape: Sequence[int], scale: float = 1.0, weighting: str = "gaussian") -> None:
        if weighting not in WEIGHTINGS:
            raise ConfigError("--weighting", f"{weighting!r} is not one of {', '.join(WEIGHTINGS)}")
        if scale <= 0:
            raise ConfigError("scale", "must be positive (input pixels per heatmap pixel)")
        self.shape, self.scale, self.weighting = tuple(shape), float(scale), weighting
        self._sum = np.zeros(self.shape, np.float32)
        self._weight = np.zeros(self.shape[-2:], np.float32)

    def add(self, x: float, y: float, prob: np.ndarray) -> None:
        """Add one tile's map (..., h, w) whose top-left is at input pixel (x, y); parts outside are cut."""
        prob = np.asarray(prob, np.float32)
        h, w = prob.shape[-2:]
        s = self.scale
        # Both edges rounded from input coordinates: neighbouring tiles meet without gaps or double rows.
        top, bottom = round(y / s), round((y + h) / s)
        left, right = round(x / s), round((x + w) / s)
        if bottom <= top or right <= left:
            return
        weight = _window(h, w, self.weighting)
        weighted = self._resize(prob * weight, bottom - top, right - left)
        weight = self._resize(weight, bottom - top, right - left)
        height, width = self.shape[-2:]
        t, b, lft, r = max(top, 0), min(bottom, height), max(left, 0), min(right, width)
        if b <= t or r <= lft:
            return
        self._sum[..., t:b, lft:r] += weighted[..., t - top:b - top, lft - left:r - left]
        self._weight[t:b, lft:r] += weight[t - top:b - top, lft - left:r - left]

    @staticmethod
    def _resize(a: np.ndarray, height: int, width: int) -> np.ndarray:
        """Area-average (down) or bilinear (up) resize of (..., h, w) to (..., height, width)."""
        if a.shape[-2:] == (height, width):
            return a
        flat = a.reshape(-1, *a.shape[-2:])
        interp = cv2.INTER_AREA if height <= a.shape[-2] else cv2.INTER_LINEAR
        out = [cv2.resize(plane, (width, height), interpolation=interp) for plane in flat]
        return np.stack(out).reshape(*a.shape[:-2], height, width)

    @property
    def covered(self) -> np.ndarray:
        """(H, W) bool: heatmap pixels that at least one tile reached."""
        return self._weight > 0

    def result(self, empty: float = 0.0) -> np.ndarray:
        """The weighted mean heatmap; `empty` where no tile reached."""
        out = np.full(self.shape, empty, np.float32)
        covered = self.covered
        out[..., covered] = self._sum[..., covered] / self._weight[covered]
        return out


@dataclass(frozen=True)
class Transform:
    """A test-time augmentation on the last two dims and its inverse."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]


def _rot(k: int) -> Transform:
    return Transform(f"rot{90 * k}" if k else "identity", lambda t: torch.rot90(t, k, dims=(-2, -1)),
                     lambda t: torch.rot90(t, -k, dims=(-2, -1)))


def _flip(dim: int, name: str) -> Transform:
    return Transform(name, lambda t: torch.flip(t, dims=(dim,)), lambda t: torch.flip(t, dims=(dim,)))


# The paper's TTA set {rotation, vertical flip, horizontal flip}, rotations by 90, 180 and 270 degrees.
TTA_TRANSFORMS: tuple[Transform, ...] = (_rot(0), _rot(1), _rot(2), _rot(3), _flip(-1, "hflip"),
                                         _flip(-2, "vflip"))


def _probabilities(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Softmax over the class dim of the model's logits."""
    return model(batch).softmax(dim=1)


@torch.inference_mode()
def predict_tta(model: nn.Module, batch: torch.Tensor,
                transforms: Sequence[Transform] = TTA_TRANSFORMS) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, aleatoric variance) of class probabilities (B, K, H, W) over `transforms` (Eq. 4). Each
    transform sees the original batch and is undone on its own output; the model should be in eval mode.
    Works for MRN batches (B, J, C, S, S) too: transforms act on the last two dims."""
    if not transforms:
        raise ConfigError("transforms", "test-time augmentation needs at least one transform")
    probs = torch.stack([t.inverse(_probabilities(model, t.forward(batch))) for t in transforms])
    return probs.mean(dim=0), probs.var(dim=0, unbiased=False)


@torch.inference_mode()
def ensemble_predict(models: Sequence[nn.Module], batch: torch.Tensor, tta: bool = True,
                     transforms: Sequence[Transform] = TTA_TRANSFORMS) -> dict[str, torch.Tensor]:
    """Ensemble class probabilities (B, K, H, W): `mean` over members, `epistemic` variance across members
    (Eq. 5) and, with `tta`, `aleatoric` = the members' mean TTA variance (Eq. 4)."""
    if not models:
        raise ConfigError("--model", "the ensemble has no members")
    if tta:
        means, variances = zip(*(predict_tta(m, batch, transforms) for m in models))
    else:
        means, variances = [_probabilities(m, batch) for m in models], None
    stacked = torch.stack(list(means))
    out = {"mean": stacked.mean(dim=0), "epistemic": stacked.var(dim=0, unbiased=False)}
    if variances is not None:
        out["aleatoric"] = torch.stack(list(variances)).mean(dim=0)
    return out
