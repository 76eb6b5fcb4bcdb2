"""RAN's representation network (papers/ran-representation-aggregation-networks.txt §3) and NIC's supervised
baseline encoder (§4.3): a tile classifier (tumour vs non-tumour) trained on annotated tiles, whose
intermediate fully-connected layer (AlexNet's FC6 in RAN; here the C-wide layer after the conv trunk, after
its ReLU) is the representation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .method import OneObjectiveMethod, register_method
from .nets import ConvEncoder, NetConfig


@register_method
class TileClassifier(OneObjectiveMethod):
    """Conv trunk -> FC6 (C units, ReLU) -> dropout -> classes."""

    name = "supervised"
    rows = "labelled"
    relu_embedding = True

    def __init__(self, net: NetConfig, n_classes: int = 2, dropout: float = 0.5) -> None:
        super().__init__(net)
        self.fc6 = ConvEncoder(net, net.code_size)
        self.classify = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(net.code_size, n_classes))

    @property
    def encoder(self) -> ConvEncoder:
        """The trunk up to FC6."""
        return self.fc6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.classify(self.fc6(x))

    def objective(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy on the tiles' labels; also reports the batch accuracy."""
        logits = self(batch["image"])
        y = batch["label"].long()
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.item(), "accuracy": float((logits.argmax(1) == y).float().mean())}
