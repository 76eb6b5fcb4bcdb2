"""Typed configuration of segmentation training (`slidegrid train-seg`), validated once, naming the flag.

Defaults follow papers/digipathai-ensemble-segmentation-framework.txt ("Training"): Adam, encoder frozen for
the first 2 epochs, step LR decay, early stopping on the validation loss, 256-px patches at the highest
resolution, one ensemble member per cross-validation fold (the paper's three architectures). MRN members
read concentric tiles at 0.5, 1, 2 and 4 µm/px (papers/mrn-multi-resolution-unet.txt §4.1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError
from ..models.segmentation import ARCHITECTURES
from ..placement import START_TIMEOUT_S
from ..seg_patches import PatchSpec
from ..storage import absolute_paths

MEMBERS = (*ARCHITECTURES, "mrn-bilinear", "mrn-transposed")
SEG_MODELS = (*MEMBERS, "ensemble")
PAPER_ENSEMBLE = tuple(ARCHITECTURES)
MRN_MPPS = (0.5, 1.0, 2.0, 4.0)
# --tiny: small members that train on a CPU in seconds (tests, smoke runs); nothing is downloaded either way.
TINY_SMP = {"encoder": "tu-mobilenetv3_small_050", "encoder_depth": 3, "decoder_channels": (16, 8, 8)}
TINY_MRN = {"width": 8, "depth": 2}


@dataclass(frozen=True)
class SegTrainConfig:
    """One `train-seg` run: a member, or an ensemble of members trained on different folds in parallel."""

    cohort: str
    out: str
    model: str = "ensemble"
    members: tuple[str, ...] = PAPER_ENSEMBLE  # ensemble only: member i is validated on the i-th fold
    epochs: int = 20
    lr: float = 1e-4
    lr_step: int = 5  # epochs between LR decays
    lr_gamma: float = 0.5
    freeze_epochs: int = 2
    patience: int = 3  # epochs without a lower validation loss before stopping (0: off)
    batch_size: int = 16
    patch_size: int = 256
    mpp: float = 0.5
    mpps: tuple[float, ...] = ()  # MRN resolutions (default MRN_MPPS scaled from --mpp); ignored otherwise
    patches_per_slide: int = 64
    val_patches_per_slide: int = 16
    perturb_radius: float = 128.0
    label_mpp: float = 2.0
    augment: bool = True
    tiny: bool = False
    encoder: str | None = None
    encoder_depth: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    val_fold: int | None = None  # single member: the held-out fold (default: the lowest)
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None  # None: planned (1, or a share where nothing else fits)
    data_cpus: float | None = None  # CPUs kept for Ray Data reads (None: planned, placement.py)
    start_timeout_s: float = START_TIMEOUT_S  # a run whose workers cannot start in this time fails
    max_concurrent: int | None = None  # ensemble members training at once (None: as many as fit)
    max_failures: int = 1
    storage: str | None = None
    name: str | None = None
    tracking_uri: str | None = None
    register_as: str | None = None
    seed: int = 0
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        absolute_paths(self, "cohort", "out", "storage")
        if self.model not in SEG_MODELS:
            raise ConfigError("--model", f"{self.model!r} is not one of {', '.join(SEG_MODELS)}")
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "mpps", tuple(float(m) for m in self.mpps))
        bad = [m for m in self.members if m not in MEMBERS]
        if bad or not self.members:
            raise ConfigError("--members", f"{bad or 'none'}: choose members among {', '.join(MEMBERS)}")
        for name in ("epochs", "batch_size", "patches_per_slide", "val_patches_per_slide", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}", "must be at least 1")
        if self.lr <= 0:
            raise ConfigError("--lr", "must be positive")
        if self.freeze_epochs < 0 or self.patience < 0 or self.lr_step < 0:
            raise ConfigError("--freeze-epochs/--patience/lr_step", "must be >= 0")
        if self.encoder_depth is not None and not 3 <= self.encoder_depth <= 5:
            raise ConfigError("--encoder-depth", f"{self.encoder_depth} is not in 3..5")
        for member in self.member_names:
            self.patch_spec(member)  # validates size and resolutions

    @property
    def member_names(self) -> tuple[str, ...]:
        """The architectures trained: the members of an ensemble, else the one model."""
        return self.members if self.model == "ensemble" else (self.model,)

    def patch_spec(self, member: str, augment: bool | None = None) -> PatchSpec:
        """Patch geometry for a member: MRN members get concentric tiles at several mpps."""
        mpps = (self.mpp,)
        if member.startswith("mrn-"):
            mpps = self.mpps or tuple(self.mpp * m / MRN_MPPS[0] for m in MRN_MPPS)
            if mpps[0] != self.mpp:
                raise ConfigError("--mpps", f"the first MRN resolution {mpps[0]} must equal --mpp {self.mpp}")
        return PatchSpec(patch_size=self.patch_size, mpps=mpps, perturb_radius=self.perturb_radius,
                         label_mpp=self.label_mpp, augment=self.augment if augment is None else augment)

    def member_kwargs(self, member: str) -> dict[str, Any]:
        """Keyword arguments of build_model for a member (tiny presets, encoder overrides, model_kwargs)."""
        if member.startswith("mrn-"):
            kw: dict[str, Any] = {**(TINY_MRN if self.tiny else {}), "n_resolutions": len(self.patch_spec(member).mpps)}
        else:
            kw = dict(TINY_SMP) if self.tiny else {}
            if self.encoder:
                kw["encoder"] = self.encoder
            if self.encoder_depth:
                kw["encoder_depth"] = self.encoder_depth
                if "decoder_channels" in kw:
                    kw["decoder_channels"] = tuple(max(8, 64 >> i) for i in range(self.encoder_depth))
            if member.startswith("deeplab"):
                kw.pop("decoder_channels", None)
        return {**kw, **self.model_kwargs}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (Ray Train's train_loop_config, MLflow params)."""
        return asdict(self)
