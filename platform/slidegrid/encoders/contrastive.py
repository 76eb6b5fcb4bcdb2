"""NIC's contrastive encoder (papers/nic-neural-image-compression.txt §2.2): a two-branch Siamese network
classifying pairs of patches as *same* location (y = 1) or *different* (y = 0).

Both branches are one shared encoder E; a small head sees |e1 - e2| and e1 * e2 (symmetric in the pair) and
outputs the logit of *same*. Trained with binary cross-entropy; the representation is E's output.

Pairs on slides follow NIC: *same* = one location under two strong augmentations, *different* = the adjacent
non-overlapping tile (75%) or a tile of another slide. Patch sets (PatchCamelyon) carry no slide or position,
so there are no adjacent tiles: *same* = two random crops (2/3 to all of the side, resized back) of one patch,
each under its own strong augmentation (§2.2), *different* = crops of two different patches
(train/encoder/data.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .method import OneObjectiveMethod, register_method
from .nets import ConvEncoder, NetConfig


@register_method
class Siamese(OneObjectiveMethod):
    """Shared encoder + pair classifier."""

    name = "contrastive"
    rows = "pairs"

    def __init__(self, net: NetConfig, hidden: int = 128) -> None:
        super().__init__(net)
        self.enc = ConvEncoder(net, net.code_size)
        self.head = nn.Sequential(nn.Linear(2 * net.code_size, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    @property
    def encoder(self) -> ConvEncoder:
        """The shared branch E."""
        return self.enc

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Logit of *same* for each pair."""
        # One pass over both halves: BatchNorm sees the same statistics for either branch.
        e1, e2 = self.enc(torch.cat([x1, x2])).chunk(2)
        return self.head(torch.cat([(e1 - e2).abs(), e1 * e2], dim=1)).squeeze(1)

    def objective(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Binary cross-entropy on same/different; also reports the pair accuracy."""
        logit = self(batch["image"], batch["image2"])
        y = batch["same"].float()
        loss = F.binary_cross_entropy_with_logits(logit, y)
        return loss, {"loss": loss.item(), "pair_accuracy": float(((logit > 0).float() == y).float().mean())}
