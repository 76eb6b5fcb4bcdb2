"""Typed configuration of `slidegrid train-encoder`: one learned tile encoder trained on tiles of an archive
(papers/nic-neural-image-compression.txt §4.3: P = 128 px, C = 128; RAN §3 for the supervised network), or on
the patches of one split of a labelled patch set (`train_split`; encoders/patches.py), validated on another."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ...encoders.learned import method_class
from ...encoders.nets import NetConfig
from ...errors import ConfigError
from ...geometry.tiling import GridSpec
from ...geometry.tissue import TissueConfig
from ...io.storage import absolute_paths
from ...placement import START_TIMEOUT_S

# Defaults on an archive (NIC §4.3: P = 128 px; slidegrid's 0.5 µm/px). A patch set has no default pixel size
# (--mpp is required) and its tile size is the patches' own side.
ARCHIVE_TILE_SIZE = 128
ARCHIVE_MPP = 0.5


@dataclass(frozen=True)
class EncoderTrainConfig:
    """One encoder training run; every field is a `train-encoder` flag of the same name, those of the nested
    `grid` and `tissue` too (--tile-size, --mpp, --min-tissue; --tissue-mpp)."""

    input: str
    out: str
    method: str = "vae"
    code_size: int = 128
    # The tiles the encoder sees: side and µm/px (None: 128 px at 0.5 µm/px on an archive; the patches' side on a
    # patch set, which requires the mpp: patches carry no pixel size), and on an archive the grid they come from
    # (training tiles at least half tissue by default, where an encode grid keeps a quarter).
    grid: GridSpec = field(default_factory=lambda: GridSpec(min_tissue=0.5))
    tissue: TissueConfig = field(default_factory=TissueConfig)  # the tissue mask of an archive's slides
    width: int = 32  # channels of the first conv layer (doubling per layer)
    depth: int = 4  # stride-2 layers
    epochs: int = 10
    tiles: int = 4096  # training tiles (contrastive: pairs) per epoch
    batch_size: int = 64
    lr: float | None = None  # default: the method's default_lr
    gamma: float = 1.0  # VAE: weight of the KL term (Eq. 3)
    augment: bool = True  # strong augmentation of single tiles (contrastive pairs are always augmented)
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
    # Patch-set input (`train-encoder --input PATCH_ROOT --train-split S [--val-split V]`): train on split S,
    # compute validation metrics (and, but for BiGAN, keep the epoch of lowest validation loss) on split V only.
    train_split: str | None = None
    val_split: str | None = None
    val_tiles: int = 1024  # validation patches (contrastive: pairs) per epoch, drawn once
    crop_min: int | None = None  # contrastive on patches: crop side drawn from [crop_min, tile size] (None: 2/3)

    def __post_init__(self) -> None:
        absolute_paths(self, "input", "out", "storage")
        # As a Ray Train loop config (to_dict) the nested configs arrive as dicts.
        for name, cls in (("grid", GridSpec), ("tissue", TissueConfig)):
            if isinstance(getattr(self, name), Mapping):
                object.__setattr__(self, name, cls(**getattr(self, name)))
        grid = self.grid
        if self.patches:
            from ...encoders.patches import check_mpp

            grid = replace(grid, mpp=check_mpp(grid.mpp))
            object.__setattr__(self, "grid", grid)
            side = self.patch_side()
            if grid.tile_size is not None and grid.tile_size != side:
                raise ConfigError("--tile-size", f"{grid.tile_size} px, but the patches are {side} px: an encoder "
                                                 "trains on whole patches (crops are resized back to the patch "
                                                 "size); leave --tile-size out or resize the set")
            object.__setattr__(self, "grid", grid.resolved(grid.mpp, side))
            if self.val_split == self.train_split:
                raise ConfigError("--val-split", f"is the training split {self.train_split!r}: validation must "
                                                 "use other patches (PCam: --val-split valid, never test)")
            if self.val_tiles < 1:
                raise ConfigError("--val-tiles", "must be at least 1")
        else:
            for flag, value in (("--val-split", self.val_split), ("--crop-min", self.crop_min)):
                if value is not None:
                    raise ConfigError(flag, "only means something for a patch set: pass --train-split S "
                                            "(--input ROOT/<split>/<class>/ or a path,label,split table)")
            object.__setattr__(self, "grid", grid.resolved(ARCHIVE_MPP, ARCHIVE_TILE_SIZE))
        method_class(self.method)  # ConfigError naming the methods
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
        side = self.tile_size
        if self.crop_min is not None and not 8 <= self.crop_min <= side:
            raise ConfigError("--crop-min", f"{self.crop_min} px must lie in 8-{side} (the tile size)")

    @property
    def patches(self) -> bool:
        """Whether the input is a patch set (a training split is named) rather than a slide archive."""
        return self.train_split is not None

    def patch_side(self) -> int:
        """The side in px of the first patch of the training split (the tile size a patch set trains at);
        ConfigError for a non-square patch or a missing split."""
        from ...encoders.patches import decode_patch, read_patch_set

        data = read_patch_set(self.input, self.grid.mpp)
        first = data.paths[int(data.split(self.train_split, "--train-split")[0])]
        h, w = decode_patch(first).shape[:2]
        if h != w:
            raise ConfigError(first, f"{w}×{h} px: encoders train on square patches")
        return int(h)

    @property
    def tile_size(self) -> int:
        """The side in px of the tiles the encoder sees (the resolved grid's)."""
        assert self.grid.tile_size is not None  # resolved in __post_init__
        return self.grid.tile_size

    @property
    def mpp(self) -> float:
        """The µm/px of the tiles the encoder sees (the resolved grid's)."""
        assert self.grid.mpp is not None  # resolved in __post_init__
        return self.grid.mpp

    @property
    def crop_range(self) -> tuple[int, int]:
        """(min, max) side in px of the crops of contrastive patch pairs (max = the tile size)."""
        return (self.crop_min or max(8, round(self.tile_size * 2 / 3)), self.tile_size)

    @property
    def net(self) -> NetConfig:
        """Network geometry."""
        return NetConfig(tile_size=self.tile_size, code_size=self.code_size, width=self.width, depth=self.depth)

    @property
    def learning_rate(self) -> float:
        """--lr, or the method's default."""
        return self.lr if self.lr is not None else method_class(self.method).default_lr

    @property
    def rows(self) -> str:
        """What the method trains on: "tiles", "pairs" or "labelled" (its card, encoders/method.TileMethod)."""
        return method_class(self.method).rows

    @property
    def run_name(self) -> str:
        """Ray Train run name (same name + storage = resume)."""
        return self.name or f"encoder-{self.method}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (Ray Train's train_loop_config, MLflow params)."""
        return asdict(self)
