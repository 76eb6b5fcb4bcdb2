"""Typed configuration of segmentation training (`slidegrid train-seg`), validated once, naming the flag.

Each member trains with its own paper's recipe (`SEG_RECIPES`, from the members' model cards); a flag the user gives overrides the recipe
and is recorded as an override. DigiPathAI members (papers/digipathai-ensemble-segmentation-framework.txt,
"Loss function", "Training", "Inference pipeline"): the hybrid loss, Adam, a pretrained DenseNet-121 /
Inception-ResNet-V2 encoder frozen for the first 2 epochs, step LR decay, 256-px patches at the highest
resolution, one member per cross-validation fold. MRN members (papers/mrn-multi-resolution-unet.txt §3.1,
§4.1): binary cross-entropy, Adam 1e-3, L2 0.005 on the convolution kernels, batch 16, 512-px concentric tiles
at 0.5, 1, 2 and 4 µm/px. Training length (--epochs, --patience) is the user's budget, shared by all members.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ...errors import ConfigError
from ...io.storage import absolute_paths
from ...models import model_card, registered
from ...models.mrn import MRN_PAPER
from ...models.registry import SegRecipe
from ...models.segmentation import ARCHITECTURES, AUTO, RANDOM, member_encoder
from ...placement import START_TIMEOUT_S
from .data import PatchSpec

PAPER_ENSEMBLE = tuple(ARCHITECTURES)
# Every registered segmentation model (each with its paper's recipe on its card), the paper's ensemble first.
MEMBERS = (*PAPER_ENSEMBLE, *(m for m in registered("segmentation") if m not in PAPER_ENSEMBLE))
SEG_MODELS = (*MEMBERS, "ensemble")
LOSSES = ("hybrid", "bce")
# --tiny: small members that train on a CPU in seconds (tests, smoke runs); nothing is downloaded either way.
TINY_SMP = {"encoder": "tu-mobilenetv3_small_050", "encoder_depth": 3, "decoder_channels": (16, 8, 8)}
TINY_MRN = {"width": 16, "depth": 2}
TINY_PATCH = 64


SEG_RECIPES: dict[str, SegRecipe] = {m: model_card(m).recipes["segmentation"] for m in MEMBERS}
# SegTrainConfig fields that override the recipe when given (None: the recipe's value).
RECIPE_FIELDS = ("loss", "lr", "l2", "freeze_epochs", "lr_step", "lr_gamma", "batch_size", "patch_size", "mpps")


def recipe_defaults(name: str) -> str:
    """A recipe field's values across members, for help texts: "0.0001 (unet-densenet121, ...); 0.001 (mrn-...)"."""
    by_value: dict[Any, list[str]] = {}
    for member, recipe in SEG_RECIPES.items():
        by_value.setdefault(getattr(recipe, name), []).append(member)
    return "; ".join(f"{v:g} ({', '.join(ms)})" if isinstance(v, float) else f"{v} ({', '.join(ms)})"
                     for v, ms in by_value.items())


@dataclass(frozen=True)
class SegTrainConfig:
    """One `train-seg` run: a member, or an ensemble of members trained on different folds in parallel.
    Recipe fields left None take the member's `SEG_RECIPES` value (`recipe`)."""

    cohort: str
    out: str
    model: str = "ensemble"
    members: tuple[str, ...] = PAPER_ENSEMBLE  # ensemble only: member i is validated on the i-th fold
    epochs: int = 20
    loss: str | None = None  # "hybrid" | "bce"
    lr: float | None = None
    l2: float | None = None
    lr_step: int | None = None  # epochs between LR decays (0: constant)
    lr_gamma: float | None = None
    freeze_epochs: int | None = None  # applies to pretrained encoders only
    patience: int = 3  # epochs without a lower validation loss before stopping (0: off)
    batch_size: int | None = None
    patch_size: int | None = None
    mpp: float = 0.5
    mpps: tuple[float, ...] = ()  # MRN resolutions (default: the recipe's, scaled from --mpp); ignored otherwise
    patches_per_slide: int = 64
    val_patches_per_slide: int = 16
    perturb_radius: float = 128.0
    label_mpp: float = 2.0
    augment: bool = True
    tiny: bool = False
    encoder: str | None = None
    encoder_depth: int | None = None
    encoder_weights: str = AUTO  # "auto" | "random" | FILE | MEMBER=FILE,... (see `encoder_request`)
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
            if (getattr(self, name) or 1) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}", "must be at least 1")
        if self.loss is not None and self.loss not in LOSSES:
            raise ConfigError("--loss", f"{self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.lr is not None and self.lr <= 0 or self.lr_gamma is not None and self.lr_gamma <= 0:
            raise ConfigError("--lr/--lr-gamma", "must be positive")
        if min(self.freeze_epochs or 0, self.patience, self.lr_step or 0, self.l2 or 0) < 0:
            raise ConfigError("--freeze-epochs/--patience/--lr-step/--l2", "must be >= 0")
        if self.encoder_depth is not None and not 3 <= self.encoder_depth <= 5:
            raise ConfigError("--encoder-depth", f"{self.encoder_depth} is not in 3..5")
        self._weights_requests()
        for member in self.member_names:
            self.patch_spec(member)  # validates size and resolutions

    @property
    def member_names(self) -> tuple[str, ...]:
        """The architectures trained: the members of an ensemble, else the one model."""
        return self.members if self.model == "ensemble" else (self.model,)

    def recipe(self, member: str) -> SegRecipe:
        """The member's paper recipe with the values given in this config (and --tiny's patch size) in place."""
        base = SEG_RECIPES[member]
        given = {f: getattr(self, f) for f in RECIPE_FIELDS if f != "mpps" and getattr(self, f) is not None}
        if self.tiny and self.patch_size is None:
            given["patch_size"] = min(base.patch_size, TINY_PATCH)
        mrn = member.startswith("mrn-")
        mpps = self.mpps if mrn and self.mpps else tuple(self.mpp * m / base.mpps[0] for m in base.mpps)
        return replace(base, **given, mpps=mpps)

    def overrides(self, member: str) -> dict[str, Any]:
        """The recipe values this run changes (flags, --mpp, --tiny), as {field: value used}."""
        used, paper = self.recipe(member), SEG_RECIPES[member]
        return {f: getattr(used, f) for f in RECIPE_FIELDS if getattr(used, f) != getattr(paper, f)}

    def freeze_epochs_for(self, member: str, pretrained: bool) -> int:
        """Epochs the member's encoder stays frozen: the recipe's (or --freeze-epochs) when it starts from
        pretrained weights; never when it is randomly initialised (freezing random features teaches nothing)."""
        return self.recipe(member).freeze_epochs if pretrained else 0

    def _weights_requests(self) -> tuple[str, dict[str, str]]:
        """(default, per member) of --encoder-weights: "auto", "random", FILE (every U-Net/DeepLab member,
        which must then share an encoder) or MEMBER=FILE pairs, comma-separated (members not named: auto)."""
        value = self.encoder_weights.strip()
        parts = [p.strip() for p in value.split(",") if p.strip()]
        pairs = [p.split("=", 1) for p in parts]
        named = parts and all(len(p) == 2 and p[0].strip() in MEMBERS for p in pairs)
        default, per = (AUTO, {k.strip(): v.strip() for k, v in pairs}) if named else (value or AUTO, {})
        smp_members = [m for m in self.member_names if not m.startswith("mrn-")]
        for m in per:
            if m not in self.member_names:
                raise ConfigError("--encoder-weights", f"{m} is not a member of this run ({', '.join(self.member_names)})")
        if any(m.startswith("mrn-") and v != RANDOM for m, v in per.items()) or (
                not smp_members and default not in (AUTO, RANDOM)):
            raise ConfigError("--encoder-weights", f"MRN members train from scratch ({MRN_PAPER} §4.1): they have "
                                                   "no pretrained encoder to load")
        if default not in (AUTO, RANDOM):
            encoders = {member_encoder(m, self.member_kwargs(m).get("encoder")) for m in smp_members}
            if len(encoders) > 1:
                raise ConfigError("--encoder-weights", f"one file for members with different encoders "
                                                       f"({', '.join(sorted(encoders))}); name each: MEMBER=FILE,...")
        return default, per

    def encoder_request(self, member: str) -> str:
        """What --encoder-weights asks for this member: "auto", "random" or a file (MRN: always "random")."""
        if member.startswith("mrn-"):
            return RANDOM
        default, per = self._weights_requests()
        return per.get(member, default)

    def patch_spec(self, member: str, augment: bool | None = None) -> PatchSpec:
        """Patch geometry for a member: MRN members get concentric tiles at several mpps."""
        recipe = self.recipe(member)
        if recipe.mpps[0] != self.mpp:
            raise ConfigError("--mpps", f"the first MRN resolution {recipe.mpps[0]} must equal --mpp {self.mpp}")
        return PatchSpec(patch_size=recipe.patch_size, mpps=recipe.mpps, perturb_radius=self.perturb_radius,
                         label_mpp=self.label_mpp, augment=self.augment if augment is None else augment)

    def member_kwargs(self, member: str) -> dict[str, Any]:
        """Keyword arguments of build_model for a member (tiny presets, encoder overrides, model_kwargs)."""
        if member.startswith("mrn-"):
            kw: dict[str, Any] = {**(TINY_MRN if self.tiny else {}), "n_resolutions": len(self.recipe(member).mpps)}
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
