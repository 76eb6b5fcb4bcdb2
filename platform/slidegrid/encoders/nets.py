"""The convolutional building blocks shared by the learned tile encoders (papers/nic-neural-image-compression.txt
§2.1-2.3 and §4.3: small conv nets on P x P patches, P = 128, code size C = 128).

A strided-convolution encoder (patch -> vector) and its mirror, a transposed-convolution decoder (vector ->
patch), in the DCGAN style the BiGAN paper builds on: every stride-2 layer halves the side and doubles the
channels. Sizes are configurable so that tests train on 32-px tiles in seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

# Inputs are scaled to [-1, 1] (mean 0.5, std 0.5 of [0, 1]): the range of the decoders' tanh output.
NORM_MEAN = (0.5, 0.5, 0.5)
NORM_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class NetConfig:
    """Geometry of an encoder network: tile side P, code size C, first-layer channels and stride-2 layers."""

    tile_size: int = 128
    code_size: int = 128
    width: int = 32
    depth: int = 4

    def __post_init__(self) -> None:
        if self.code_size < 1:
            raise ConfigError("--code-size", "must be a positive integer")
        if self.width < 1 or self.depth < 1:
            raise ConfigError("--width", "width and depth must be positive integers")
        if self.tile_size % (2 ** self.depth) or self.tile_size < 2 ** self.depth:
            raise ConfigError("--tile-size", f"{self.tile_size} px is not a multiple of 2^depth = {2 ** self.depth} "
                                             "(each encoder layer halves the tile side)")

    def channels(self, i: int) -> int:
        """Channels after stride-2 layer i (doubling, capped at 8x the first layer)."""
        return self.width * min(2 ** i, 8)

    @property
    def bottleneck(self) -> int:
        """Side of the last feature map."""
        return self.tile_size // 2 ** self.depth

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (checkpoint metadata, MLflow params)."""
        return asdict(self)


class ConvEncoder(nn.Module):
    """(N, 3, P, P) in [-1, 1] -> (N, out_features): stride-2 4x4 convolutions, BatchNorm, LeakyReLU, linear."""

    def __init__(self, net: NetConfig, out_features: int, norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(net.depth):
            c_out = net.channels(i)
            layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=not (norm and i)))
            # No norm on the first layer (DCGAN): it would remove the tile's mean colour before anything sees it.
            if norm and i:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            if dropout:
                layers.append(nn.Dropout2d(dropout))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * net.bottleneck ** 2, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors of a batch of patches."""
        return self.fc(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """(N, C) -> (N, 3, P, P) in [-1, 1]: the mirror of ConvEncoder (VAE decoder D, BiGAN generator G)."""

    def __init__(self, net: NetConfig) -> None:
        super().__init__()
        self.net = net
        c = net.channels(net.depth - 1)
        self.fc = nn.Sequential(nn.Linear(net.code_size, c * net.bottleneck ** 2), nn.BatchNorm1d(c * net.bottleneck ** 2),
                                nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for i in reversed(range(net.depth)):
            c_out = 3 if i == 0 else net.channels(i - 1)
            layers.append(nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1, bias=i == 0))
            layers += [nn.Tanh()] if i == 0 else [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c = c_out
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Patches from codes."""
        b = self.net.bottleneck
        return self.layers(self.fc(z).view(len(z), -1, b, b))


class Embedder(nn.Module):
    """What `slidegrid encode` runs for a learned encoder: the trained ConvEncoder, the slice of its output that
    is the representation (the VAE's mu), optionally rectified (RAN's FC6 features after ReLU).

    `meta` (method, network geometry, tile size, mpp, normalization) travels with the module, so a model loaded
    from MLflow carries its own preprocessing.
    """

    def __init__(self, trunk: ConvEncoder, code_size: int, relu: bool, meta: dict[str, Any]) -> None:
        super().__init__()
        self.trunk = trunk
        self.code_size = code_size
        self.relu = relu
        self.meta = dict(meta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, P, P) normalized patches -> (N, C) embeddings."""
        e = self.trunk(x)[:, : self.code_size]
        return torch.relu(e) if self.relu else e


def to_input(tiles: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) tiles -> float (N, 3, H, W) in [-1, 1] (the normalization NORM_MEAN/NORM_STD)."""
    return tiles.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
