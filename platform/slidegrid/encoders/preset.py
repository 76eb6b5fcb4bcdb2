"""Foundation-model presets: the exact architecture, preprocessing, output and geometry of a published patch
encoder, registered by name like timm's models (`--encoder uni2-h`).

A preset is facts, each cited in its family's file under `encoders/foundation/` (model card or paper): how
to build the network without downloading anything (a timm architecture and its kwargs, or a builder), the
input it expects (size, resize and centre crop, mean/std), what the embedding is (the CLS token, or CLS
concatenated with the mean patch token), its size, the tile size and µm/px it was trained on, the licence,
whether the weights are gated, and the parameter count the source states.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUTS = ("cls", "cls+mean", "pool")


@dataclass(frozen=True)
class Preset:
    """One published patch encoder.

    `kwargs` is a zero-argument callable returning timm.create_model keyword arguments (so that torch and timm
    are imported only when a model is built); `builder`, when set, builds the module instead of timm.
    `output`: "cls" (the class token after the final norm), "cls+mean" (class token concatenated with the mean
    of the patch tokens, prefix and register tokens excluded) or "pool" (the model's own pooled features).
    `remap` turns the checkpoint's keys into the module's (e.g. a transformers checkpoint into timm), and
    `head` names checkpoint key prefixes that may be left over (a classification head).
    """

    name: str
    family: str
    hf_repo: str | None
    arch: str
    dim: int
    tile_size: int
    mpp: float
    licence: str
    gated: bool
    params_m: float  # parameters in millions, as the source states
    sources: tuple[str, ...]
    kwargs: Callable[[], Mapping[str, Any]] = dict
    input_size: int = 224
    resize: int | None = None  # shorter side resized to this, then centre-cropped to input_size (None: input_size)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    output: str = "cls"
    weight_files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    head: tuple[str, ...] = ()
    remap: Callable[[dict], dict] | None = None
    builder: Callable[[Preset], Any] | None = None
    version: str = "1"
    params_exact: bool = False  # the source gives an exact count (checked within 0.5%), not a rounded figure
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"preset {self.name}: output {self.output!r} is not one of {OUTPUTS}")


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    """Add a preset under its name (each family file registers its models at import)."""
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} registered twice")
    PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset:
    """The preset called `name`; ConfigError listing the presets otherwise."""
    from . import foundation  # noqa: F401  (registers every family)

    if name not in PRESETS:
        raise ConfigError("--encoder", f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def find_preset(name: str) -> Preset | None:
    """The preset called `name`, or None when `name` is not a preset (mean-rgb, timm:ARCH, a learned method)."""
    from . import foundation  # noqa: F401

    return PRESETS.get(name)


def all_presets() -> list[Preset]:
    """Every registered preset, by name."""
    from . import foundation  # noqa: F401

    return [PRESETS[k] for k in sorted(PRESETS)]


def build_backbone(preset: Preset, device: str = "cpu"):
    """The preset's network with random weights, on `device` ("meta" builds it without memory)."""
    import timm
    import torch

    with torch.device(device):
        if preset.builder is not None:
            return preset.builder(preset)
        return timm.create_model(preset.arch, pretrained=False, num_classes=0, **dict(preset.kwargs()))


def preset_module(preset: Preset, backbone):
    """A torch module: normalized (N, 3, T, T) tiles → (N, dim) embeddings, resizing and cropping T to the
    model's input as the preset says, then taking the preset's output tokens."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    class _Module(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            side = preset.resize or preset.input_size
            if x.shape[-1] != side or x.shape[-2] != side:
                x = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False, antialias=True)
            if side != preset.input_size:
                off = (side - preset.input_size) // 2
                x = x[..., off:off + preset.input_size, off:off + preset.input_size]
            if preset.output == "pool":
                return self.backbone(x)
            tokens = self.backbone.forward_features(x)
            cls = tokens[:, 0]
            if preset.output == "cls":
                return cls
            prefix = getattr(self.backbone, "num_prefix_tokens", 1)
            return torch.cat([cls, tokens[:, prefix:].mean(dim=1)], dim=-1)

    return _Module()
