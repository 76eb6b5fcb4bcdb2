"""Typed configuration of `slidegrid train-encoder`: one learned tile encoder trained on tiles of an archive
(papers/nic-neural-image-compression.txt §4.3: P = 128 px, C = 128; RAN §3 for the supervised network)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..encoders.learned import METHODS
from ..encoders.nets import NetConfig
from ..errors import ConfigError
from ..placement import START_TIMEOUT_S
from ..storage import absolute_paths
from ..tiling import GridSpec
from ..tissue import TissueConfig

# Adam step sizes: the GAN convention (2e-4) for BiGAN, 1e-3 for the others.
DEFAULT_LR = {"vae": 1e-3, "contrastive": 1e-3, "bigan": 2e-4, "supervised": 1e-3}


@dataclass(frozen=True)
class EncoderTrainConfig:
    """One encoder training run; every field is a `train-encoder` flag of the same name."""

    input: str
    out: str
    method: str = "vae"
    code_size: int = 128
    tile_size: int = 128
    mpp: float = 0.5
    width: int = 32  # channels of the first conv layer (doubling per layer)
    depth: int = 4  # stride-2 layers
    epochs: int = 10
    tiles: int = 4096  # training tiles (contrastive: pairs) per epoch
    batch_size: int = 64
    lr: float | None = None  # default DEFAULT_LR[method]
    gamma: float = 1.0  # VAE: weight of the KL term (Eq. 3)
    augment: bool = True  # strong augmentation of single tiles (contrastive pairs are always augmented)
    min_tissue: float = 0.5
    tissue_mpp: float = 8.0
    workers: int = 1
    cpus_per_worker: float | None = None  # None: planned (1, or a share where nothing else fits)
    data_cpus: float | None = None  # CPUs kept for Ray Data reads (None: planned, placement.py)
    start_timeout_s: float = START_TIMEOUT_S  # a run whose workers cannot start in this time fails
    gpus_per_worker: float = 0.0
    max_failures: int = 2  # worker restarts, each resuming from the last epoch's checkpoint
    storage: str | None = None  # Ray Train checkpoints; default <out>/checkpoints
    name: str | None = None  # Ray Train run name (same name + storage = resume)
    tracking_uri: str | None = None
    register_as: str | None = None  # MLflow registered model name (default slidegrid-encoder-<method>)
    mlflow: bool = True
    seed: int = 0
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        absolute_paths(self, "input", "out", "storage")
        if self.method not in METHODS:
            raise ConfigError("--method", f"{self.method!r} is not one of {', '.join(METHODS)}")
        for flag, value in (("--epochs", self.epochs), ("--workers", self.workers), ("--tiles", self.tiles)):
            if value < 1:
                raise ConfigError(flag, "must be at least 1")
        if self.batch_size < 2:
            raise ConfigError("--batch-size", "must be at least 2 (BatchNorm needs two tiles per batch)")
        if self.tiles < self.batch_size * self.workers:
            raise ConfigError("--tiles", f"{self.tiles} tiles per epoch give no full batch of {self.batch_size} to "
                                         f"each of {self.workers} workers")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError("--lr", "must be positive")
        if self.gamma < 0:
            raise ConfigError("--gamma", "must be non-negative")
        _ = self.net  # building it validates code size, tile size and depth
        GridSpec(mpp=self.mpp, tile_size=self.tile_size, min_tissue=self.min_tissue)
        TissueConfig(mpp=self.tissue_mpp)

    @property
    def net(self) -> NetConfig:
        """Network geometry."""
        return NetConfig(tile_size=self.tile_size, code_size=self.code_size, width=self.width, depth=self.depth)

    @property
    def learning_rate(self) -> float:
        """--lr, or the method's default."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    @property
    def run_name(self) -> str:
        """Ray Train run name (same name + storage = resume)."""
        return self.name or f"encoder-{self.method}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (Ray Train's train_loop_config, MLflow params)."""
        return asdict(self)
