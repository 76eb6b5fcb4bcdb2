"""The DigiPathAI hybrid segmentation loss (papers/digipathai-ensemble-segmentation-framework.txt, "Loss
function", Eqs. 1-3): Loss = alpha * CE + beta * Dice_BG + gamma * Dice_FG, alpha = 0.5, beta = gamma = 0.25.

Dice loss (Eq. 1) on softmax probabilities p and one-hot truth g of one class, summed over every pixel of
the batch: DL = 1 - 2 sum(p g) / (sum(p^2) + sum(g^2)). The cross-entropy (Eq. 2) is averaged over pixels
rather than summed, so the weights mean the same at any tile and batch size. Class 0 is the background; with
more than two classes the foreground term averages the Dice losses of classes 1..K-1.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def soft_dice_loss(prob: torch.Tensor, truth: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Eq. 1 for one class: 1 - (2 sum(p g) + smooth) / (sum(p^2) + sum(g^2) + smooth) over all pixels."""
    inter = (prob * truth).sum()
    return 1 - (2 * inter + smooth) / ((prob * prob).sum() + (truth * truth).sum() + smooth)


class HybridLoss(nn.Module):
    """alpha * cross-entropy + beta * Dice(background) + gamma * Dice(foreground) on logits (B, K, H, W) and
    class indices (B, H, W). `smooth` keeps the Dice terms defined on tiles without foreground."""

    def __init__(self, alpha: float = 0.5, beta: float = 0.25, gamma: float = 0.25, smooth: float = 1.0) -> None:
        super().__init__()
        if min(alpha, beta, gamma) < 0 or smooth < 0:
            raise ValueError("loss weights and smooth must be non-negative")
        self.alpha, self.beta, self.gamma, self.smooth = alpha, beta, gamma, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The scalar loss of a batch."""
        n_classes = logits.shape[1]
        if n_classes < 2:
            raise ValueError("the hybrid loss needs logits for at least two classes (background first)")
        target = target.long()
        prob = logits.softmax(dim=1)
        onehot = F.one_hot(target, n_classes).movedim(-1, 1).to(prob.dtype)
        dice = [soft_dice_loss(prob[:, k], onehot[:, k], self.smooth) for k in range(n_classes)]
        foreground = torch.stack(dice[1:]).mean()
        return (self.alpha * F.cross_entropy(logits, target) + self.beta * dice[0] + self.gamma * foreground)
