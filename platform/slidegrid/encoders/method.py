"""What a trainable tile-encoding method is: networks, their optimizers, one training step, and the embedder
that `slidegrid encode` runs afterwards (papers/nic-neural-image-compression.txt §2; RAN §3).

Steps take a `sync` callback that averages gradients across Ray Train workers between backward() and step():
DDP's arithmetic, done explicitly because BiGAN alternates two optimizers over parts of one module, which
DDP's forward hooks do not follow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .nets import ConvEncoder, Embedder, NetConfig

Sync = Callable[[Iterable[nn.Parameter]], None]


def no_sync(params: Iterable[nn.Parameter]) -> None:
    """The single-process `sync`: gradients stay as they are."""


def optimize(loss: torch.Tensor, opt: torch.optim.Optimizer, params: list[nn.Parameter], sync: Sync) -> None:
    """One optimizer step on `loss` with gradients averaged across workers."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sync(params)
    opt.step()


class TileMethod(nn.Module, ABC):
    """A representation-learning method: trains on batches of tiles, yields a ConvEncoder-based embedder."""

    name: str
    # The part of the ConvEncoder output that is the representation, and whether it is rectified (see Embedder).
    relu_embedding: bool = False
    # Whether a lower validation `loss` means a better representation, so training keeps the epoch of the
    # lowest one (false for BiGAN: a discriminator's loss says who is winning the game, not how good E is).
    selects_on_validation: bool = True
    # What an epoch's rows are (train/encoder/data.py draws them): "tiles" (single tiles), "pairs" (two tiles and
    # whether they are the same one: the contrastive task), "labelled" (class-balanced tiles with the label of
    # their annotation or patch class).
    rows: str = "tiles"
    default_lr: float = 1e-3  # Adam's learning rate where --lr is not given
    options: tuple[str, ...] = ()  # EncoderTrainConfig fields passed to the constructor by name (VAE: gamma)

    def __init__(self, net: NetConfig) -> None:
        super().__init__()
        self.net = net

    @property
    @abstractmethod
    def encoder(self) -> ConvEncoder:
        """The network whose output holds the representation."""

    @abstractmethod
    def optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        """The method's optimizers (Adam, as in NIC's training protocol)."""

    @abstractmethod
    def training_step(self, batch: dict[str, torch.Tensor], opts: list[torch.optim.Optimizer],
                      sync: Sync = no_sync) -> dict[str, float]:
        """One step on a batch of normalized tiles; returns the step's losses (key `loss` is the objective)."""

    @abstractmethod
    def evaluate(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The training step's losses on a batch without any update (validation; call under torch.no_grad()
        in eval mode); the same keys as training_step."""

    def embedder(self, meta: dict[str, Any]) -> Embedder:
        """The trained encoder as an Embedder (shares weights with this module)."""
        return Embedder(self.encoder, self.net.code_size, self.relu_embedding, meta)


_METHODS: dict[str, type[TileMethod]] = {}


def register_method(cls: type[TileMethod]) -> type[TileMethod]:
    """Class decorator: the method becomes `train-encoder --method NAME` and `encode --encoder NAME`, its class
    attributes (rows, default_lr, options, ...) its card. Its module is `encoders/<name>.py`, named in
    learned.METHODS (the torch-free list that name checks read)."""
    _METHODS[cls.name] = cls
    return cls


def registered_method(name: str) -> type[TileMethod] | None:
    """The class registered under `name`, None before its module is imported (learned.method_class does)."""
    return _METHODS.get(name)


class OneObjectiveMethod(TileMethod):
    """A method that minimizes one objective with one Adam over all its parameters (VAE, contrastive, supervised;
    NIC's training protocol)."""

    @abstractmethod
    def objective(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimize on a batch of normalized tiles, and the step's report (key `loss` and the
        method's own terms, as floats)."""

    def optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        """One Adam over every parameter."""
        return [torch.optim.Adam(self.parameters(), lr=lr)]

    def training_step(self, batch: dict[str, torch.Tensor], opts: list[torch.optim.Optimizer],
                      sync: Sync = no_sync) -> dict[str, float]:
        """One step on the objective; returns its report."""
        loss, report = self.objective(batch)
        optimize(loss, opts[0], list(self.parameters()), sync)
        return report

    def evaluate(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The objective's report on a batch, no update."""
        return self.objective(batch)[1]
