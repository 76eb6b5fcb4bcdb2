"""NIC's variational autoencoder (papers/nic-neural-image-compression.txt §2.1, Eqs. 2-3).

E maps a patch x to mu and sigma (as log sigma^2); e = mu + sigma * n with n ~ N(0, 1) (Eq. 2, the
reparameterization); D reconstructs x from e. Objective (Eq. 3): squared reconstruction error + gamma * KL,
KL = -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2) against N(0, 1). The representation is mu.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .method import OneObjectiveMethod, register_method
from .nets import ConvDecoder, ConvEncoder, NetConfig


@register_method
class VAE(OneObjectiveMethod):
    """Encoder (2C outputs: mu, log sigma^2) and decoder, trained on Eq. 3."""

    name = "vae"
    options = ("gamma",)

    def __init__(self, net: NetConfig, gamma: float = 1.0) -> None:
        super().__init__(net)
        self.gamma = gamma
        self.enc = ConvEncoder(net, 2 * net.code_size)
        self.dec = ConvDecoder(net)

    @property
    def encoder(self) -> ConvEncoder:
        """E (its first C outputs are mu)."""
        return self.enc

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, mu and log sigma^2 of a batch (one reparameterized sample per patch)."""
        mu, logvar = self.enc(x).chunk(2, dim=1)
        e = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # Eq. 2
        return self.dec(e), mu, logvar

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. 3 per patch, averaged over the batch, and its two terms."""
        recon, mu, logvar = self(x)
        rec = F.mse_loss(recon, x, reduction="none").flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        return {"loss": rec + self.gamma * kl, "reconstruction": rec, "kl": kl}

    def objective(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 3 and its terms; also reports the per-pixel squared error of the reconstructions."""
        terms = self.losses(batch["image"])
        return terms["loss"], self._report(terms, batch["image"][0].numel())

    @staticmethod
    def _report(terms: dict[str, torch.Tensor], pixels: int) -> dict[str, float]:
        return {"loss": terms["loss"].item(), "kl": terms["kl"].item(),
                "reconstruction_mse": terms["reconstruction"].item() / pixels}
