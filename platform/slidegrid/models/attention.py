"""The min/max-attention classifier on grids (papers/attention-gigapixel-classifier.txt §II.B, Fig. 2).

A 3D convolution with an n x n x K kernel over the grid G (M' x N' x K) gives G' (M' x N' x H); max- and
min-pooling of G' (stride 1, same size) feed a spatial softmax per map (Eq. 1: each map sums to 1 over the
grid); the maps weight G (Eq. 2: v_{k,h} = sum_{m,n} A_{m,n,h} G_{m,n,k}); a non-linearity; the branch
vectors are concatenated; a linear layer predicts the label. Any grid size, no resizing. Variants of their
Table III: "minmax" (default), "max", "average" (average-pooling attention), "avgmax".
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .registry import ModelCard, Recipe, register_model

VARIANTS = {"minmax": ("max", "min"), "max": ("max",), "average": ("avg",), "avgmax": ("avg", "max")}


class AttentionClassifier(nn.Module):
    """Slide-level classifier/regressor; `attention_maps` exposes the maps for heatmaps."""

    per_cell = False

    def __init__(self, in_channels: int, n_outputs: int, maps: int = 8, kernel: int = 3, pool: int = 3,
                 variant: str = "minmax") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r} not in {sorted(VARIANTS)}")
        self.branches = VARIANTS[variant]
        # The n x n x K kernel spans all K channels: a Conv2d from K to H maps is exactly that 3D convolution.
        self.conv3d = nn.Conv2d(in_channels, maps, kernel, padding=kernel // 2)
        self.pool = pool
        self.head = nn.Linear(len(self.branches) * maps * in_channels, n_outputs)

    def _pooled(self, g: torch.Tensor, kind: str) -> torch.Tensor:
        p = self.pool
        if kind == "max":
            return F.max_pool2d(g, p, stride=1, padding=p // 2)
        if kind == "min":
            return -F.max_pool2d(-g, p, stride=1, padding=p // 2)
        return F.avg_pool2d(g, p, stride=1, padding=p // 2, count_include_pad=False)

    def attention_maps(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, branches*H, M', N') attention maps, each summing to 1 over the kept cells (Eq. 1)."""
        g = self.conv3d(x)
        b, h, m, n = g.shape
        maps = []
        for kind in self.branches:
            logits = self._pooled(g, kind).flatten(2)
            if mask is not None:
                logits = logits.masked_fill(~mask.flatten(1)[:, None, :], float("-inf"))
            maps.append(torch.softmax(logits, dim=-1).view(b, h, m, n))
        return torch.cat(maps, dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, n_outputs)."""
        a = self.attention_maps(x, mask)  # (B, branches*H, M, N)
        v = torch.einsum("bhmn,bkmn->bhk", a, x)  # Eq. 2 for every map
        return self.head(torch.tanh(v).flatten(1))


PAPER = "papers/attention-gigapixel-classifier.txt"
# Attention §III.A: Camelyon16's 270 training WSIs, each augmented by 9 transformations; §III.B: 35 epochs at
# batch 64. Per epoch: 270 x 9 grids -> ceil(2430 / 64) = 38 optimizer steps, 1,330 in all.
_ATTENTION_CLS = Recipe(
    source=f"{PAPER} §III.A, §III.B, §III.C",
    settings={"optimizer": "sgd", "lr": 1e-3, "epochs": 35, "lr_step": 20, "lr_gamma": 0.1, "batch_size": 64,
              "samples_per_epoch": 270 * 9, "augment": True, "patience": 0},
    grid_mpp=2.0, grid_tile=224, model_kwargs={"maps": 64},
    notes="SGD 1e-3 x0.1 after 20 of 35 epochs, batch 64, 9 transforms + 4 µm/px copies (§III.A-B); "
          "64 attention maps per set (§III.C)")
# TUPAC16 (§III.A): 492 training cases; MSE + Adam 1e-4, no step decay stated (§III.B).
_ATTENTION_REG = Recipe(
    source=f"{PAPER} §III.A, §III.B, §III.C",
    settings={"optimizer": "adam", "lr": 1e-4, "epochs": 35, "lr_step": 0, "batch_size": 64,
              "samples_per_epoch": 492 * 9, "augment": True, "patience": 0},
    grid_mpp=2.0, grid_tile=224, model_kwargs={"maps": 64},
    notes="MSE + Adam 1e-4, 35 epochs at batch 64 (§III.B)")
register_model("attention", AttentionClassifier, ModelCard(
    "aggregator", f"{PAPER} §II.B", heatmap="maps",
    recipes={"classification": _ATTENTION_CLS, "regression": _ATTENTION_REG}))
