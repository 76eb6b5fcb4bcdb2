"""Multi-resolution U-Nets, MRN-bilinear and MRN-transposed (papers/mrn-multi-resolution-unet.txt §3.2,
Fig. 2, §4.1).

Input: J concentric tiles of the same pixel size S, highest resolution first (e.g. 0.5, 1, 2, 4 µm/px, an
octave apart), shape (B, J, 3, S, S). One structurally identical U-Net encoder per resolution (blocks of two
3x3 conv + batch norm + ReLU, 2x2 max pooling). At every encoder level, each lower-resolution encoder's maps
are centre-cropped by gamma = 2^j (u, Eq. 2: the area the highest-resolution tile covers) and upscaled back
(v): bilinear interpolation in MRN-bilinear, 2x2 stride-2 transposed convolutions in MRN-transposed. They are
concatenated with the highest-resolution encoder's maps and merged by a 1x1 convolution with identity
activation, which keeps the decoder's width independent of J. One U-Net decoder (2x2 stride-2 transposed
convolutions + ReLU, skip connections from the merged maps) segments the central, highest-resolution tile.
The paper gives no layer widths; the default first width is 32 (doubling per level), half the original
U-Net's, since J encoders at 512 px and batch 16 had to fit one 12 GB GPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .registry import ModelCard, SegRecipe, register_model

VARIANTS = ("bilinear", "transposed")


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with batch norm and ReLU ('SAME' padding, §4.1)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _up2(c_in: int, c_out: int) -> nn.Sequential:
    """2x2 transposed convolution, stride 2, with batch norm and ReLU (Fig. 2, green)."""
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 2, stride=2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class _Encoder(nn.Module):
    """A U-Net encoder returning the maps of every level, the deepest (bottleneck) last."""

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_conv_block(c_in, c_out) for c_in, c_out in zip([in_channels, *widths], widths))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            maps.append(x)
        return maps


class _CropUpscale(nn.Module):
    """u then v of Eq. 2: keep the central 1/gamma of the maps, upscale them back by gamma = 2^octaves."""

    def __init__(self, channels: int, octaves: int, variant: str) -> None:
        super().__init__()
        self.gamma = 2**octaves
        self.up = (nn.Sequential(*(_up2(channels, channels) for _ in range(octaves))) if variant == "transposed"
                   else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ch, cw = h // self.gamma, w // self.gamma
        top, left = (h - ch) // 2, (w - cw) // 2
        crop = x[..., top:top + ch, left:left + cw]
        if self.up is None:
            return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
        return self.up(crop)


class MRN(nn.Module):
    """Multi-resolution U-Net: (B, J, C, S, S) concentric tiles -> logits (B, n_outputs, S, S) for the first
    (highest-resolution) tile. S must be a multiple of 2^depth * 2^(J-1) so that every crop is whole."""

    def __init__(self, in_channels: int = 3, n_outputs: int = 2, n_resolutions: int = 4, width: int = 32,
                 depth: int = 4, variant: str = "transposed") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError("variant", f"{variant!r} is not one of {', '.join(VARIANTS)}")
        if n_resolutions < 1 or depth < 1 or width < 1:
            raise ConfigError("MRN", "n_resolutions, depth and width must be positive")
        self.n_resolutions, self.depth, self.variant = n_resolutions, depth, variant
        widths = [width * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList(_Encoder(in_channels, widths) for _ in range(n_resolutions))
        self.crops = nn.ModuleList(
            nn.ModuleList(_CropUpscale(c, j, variant) for j in range(1, n_resolutions)) for c in widths)
        # 1x1 convolution with identity activation: a learned weighted sum over the resolutions (§3.2).
        self.merge = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c * n_resolutions, c, 1, bias=False), nn.BatchNorm2d(c)) for c in widths)
        self.ups = nn.ModuleList(_up2(widths[level + 1], widths[level]) for level in range(depth))
        self.decoders = nn.ModuleList(_conv_block(2 * widths[level], widths[level]) for level in range(depth))
        self.head = nn.Conv2d(widths[0], n_outputs, 1)

    @property
    def multiple(self) -> int:
        """The tile size S must be a multiple of this."""
        return 2**self.depth * 2 ** (self.n_resolutions - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_outputs, S, S) of the highest-resolution tile x[:, 0]."""
        if x.ndim != 5 or x.shape[1] != self.n_resolutions:
            raise ConfigError("MRN input", f"expected (B, {self.n_resolutions}, C, S, S), got {tuple(x.shape)}")
        size = x.shape[-1]
        if x.shape[-2] != size or size % self.multiple:
            raise ConfigError("tile size", f"{tuple(x.shape[-2:])} px: MRN with {self.n_resolutions} resolutions "
                              f"and depth {self.depth} needs square tiles, a multiple of {self.multiple} px")
        per_res = [enc(x[:, j]) for j, enc in enumerate(self.encoders)]
        merged = []
        for level in range(self.depth + 1):
            lower = [crop(per_res[j + 1][level]) for j, crop in enumerate(self.crops[level])]
            merged.append(self.merge[level](torch.cat([per_res[0][level], *lower], dim=1)))
        y = merged[-1]
        for level in reversed(range(self.depth)):
            y = self.decoders[level](torch.cat([self.ups[level](y), merged[level]], dim=1))
        return self.head(y)


def mrn_bilinear(in_channels: int = 3, n_outputs: int = 2, **kwargs) -> MRN:
    """MRN-bilinear: lower-resolution maps upscaled by bilinear interpolation."""
    return MRN(in_channels, n_outputs, variant="bilinear", **kwargs)


def mrn_transposed(in_channels: int = 3, n_outputs: int = 2, **kwargs) -> MRN:
    """MRN-transposed: lower-resolution maps upscaled by transposed convolutions (more capacity, §5)."""
    return MRN(in_channels, n_outputs, variant="transposed", **kwargs)


MRN_PAPER = "papers/mrn-multi-resolution-unet.txt"
MRN_MPPS = (0.5, 1.0, 2.0, 4.0)  # µm/px of the concentric inputs at --mpp 0.5 (§4.1)
# §3.1: binary cross-entropy + lambda ||W||^2 (Eq. 1); §4.1: lambda = 0.005 on every convolution and transposed
# convolution, Adam with default parameters (lr 0.001, no decay), 512-px inputs at 0.5, 1, 2, 4 µm/px, batch 16.
# No pretrained encoder, so nothing to freeze.
_MRN = SegRecipe(source=f"{MRN_PAPER} §3.1, §4.1", loss="bce", lr=1e-3, l2=0.005, freeze_epochs=0, lr_step=0,
                 lr_gamma=1.0, batch_size=16, patch_size=512, mpps=MRN_MPPS)
for _name, _factory in (("mrn-bilinear", mrn_bilinear), ("mrn-transposed", mrn_transposed)):
    register_model(_name, _factory, ModelCard("segmentation", f"{MRN_PAPER} §3.2", recipes={"segmentation": _MRN}))
