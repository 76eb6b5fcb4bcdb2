"""NIC's BiGAN encoder (papers/nic-neural-image-compression.txt §2.3, Eqs. 4-6).

G maps z ~ N(0, 1) in R^C to patches (Eq. 4), E maps real patches to codes (Eq. 5), and D tells real pairs
(x, E(x)) from generated pairs (G(z), z). Eq. 6: min_{G,E} max_D log D(x, E(x)) + log(1 - D(G(z), z)). D takes
the ascent step; G and E take the usual non-saturating form (labels swapped), as in the BiGAN paper's code.
The representation is E(x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .method import Sync, TileMethod, no_sync, optimize, register_method
from .nets import ConvDecoder, ConvEncoder, NetConfig


class Discriminator(nn.Module):
    """D(x, z): a conv branch on the patch (no BatchNorm, dropout) and a dense branch on the code, joined."""

    def __init__(self, net: NetConfig, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.x_branch = ConvEncoder(net, hidden, norm=False, dropout=dropout)
        self.z_branch = nn.Sequential(nn.Linear(net.code_size, hidden), nn.LeakyReLU(0.2, inplace=True))
        self.joint = nn.Sequential(nn.LeakyReLU(0.2), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden),
                                   nn.LeakyReLU(0.2, inplace=True), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logit that (x, z) is a real pair."""
        return self.joint(torch.cat([self.x_branch(x), self.z_branch(z)], dim=1)).squeeze(1)


@register_method
class BiGAN(TileMethod):
    """Generator, encoder and discriminator playing Eq. 6."""

    name = "bigan"
    default_lr = 2e-4  # the GAN convention (DCGAN's Adam step size)
    selects_on_validation = False  # D's loss tracks the game, not E: the last epoch is kept

    def __init__(self, net: NetConfig) -> None:
        super().__init__(net)
        self.gen = ConvDecoder(net)
        self.enc = ConvEncoder(net, net.code_size)
        self.disc = Discriminator(net)

    @property
    def encoder(self) -> ConvEncoder:
        """E."""
        return self.enc

    def optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        """Adam for D, and one Adam for G and E together (beta1 = 0.5, the GAN convention)."""
        ge = list(self.gen.parameters()) + list(self.enc.parameters())
        return [torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.999)),
                torch.optim.Adam(ge, lr=lr, betas=(0.5, 0.999))]

    def training_step(self, batch: dict[str, torch.Tensor], opts: list[torch.optim.Optimizer],
                      sync: Sync = no_sync) -> dict[str, float]:
        """One D step and one G+E step on the same batch; `loss` is D's loss (Eq. 6 from D's side)."""
        x = batch["image"]
        z = torch.randn(len(x), self.net.code_size, device=x.device)
        e, fake = self.enc(x), self.gen(z)
        ones, zeros = torch.ones(len(x), device=x.device), torch.zeros(len(x), device=x.device)
        d_loss = (F.binary_cross_entropy_with_logits(self.disc(x, e.detach()), ones)
                  + F.binary_cross_entropy_with_logits(self.disc(fake.detach(), z), zeros))
        optimize(d_loss, opts[0], list(self.disc.parameters()), sync)
        ge_loss = (F.binary_cross_entropy_with_logits(self.disc(x, e), zeros)
                   + F.binary_cross_entropy_with_logits(self.disc(fake, z), ones))
        optimize(ge_loss, opts[1], list(self.gen.parameters()) + list(self.enc.parameters()), sync)
        return {"loss": d_loss.item(), "ge_loss": ge_loss.item()}

    def evaluate(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """D's and G+E's losses (Eq. 6) on a batch and fresh codes, no update."""
        x = batch["image"]
        z = torch.randn(len(x), self.net.code_size, device=x.device)
        e, fake = self.enc(x), self.gen(z)
        ones, zeros = torch.ones(len(x), device=x.device), torch.zeros(len(x), device=x.device)
        real, gen = self.disc(x, e), self.disc(fake, z)
        d_loss = F.binary_cross_entropy_with_logits(real, ones) + F.binary_cross_entropy_with_logits(gen, zeros)
        ge_loss = F.binary_cross_entropy_with_logits(real, zeros) + F.binary_cross_entropy_with_logits(gen, ones)
        return {"loss": d_loss.item(), "ge_loss": ge_loss.item()}
