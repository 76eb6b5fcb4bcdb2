"""The DigiPathAI ensemble members (papers/digipathai-ensemble-segmentation-framework.txt, "Network
architecture"): U-Net with a DenseNet-121 encoder, U-Net with Inception-ResNet-V2, DeepLabV3+ with Xception,
built with segmentation-models-pytorch; and encoder freezing for the first epochs ("Training").

The paper's encoders are ImageNet-pretrained ("Training"); weights are never downloaded. `find_encoder_weights`
looks for them where the user keeps them (a file they name, else the local Hugging Face or torch-hub cache,
read offline) and `build_segmentation_model(encoder_state=...)` loads them; without any, the encoder starts
from random initialisation and the caller says how to supply them (`how_to_get_encoder_weights`). The paper's
DeepLabV3+ was pretrained whole on PASCAL VOC, which smp does not publish for Xception: its encoder gets
ImageNet weights like the others. The U-Net decoders upsample bilinearly, as the paper says. Xception is
timm's aligned Xception-65 (`tu-xception65`), the backbone DeepLabV3+ was designed with; smp's own `xception`
cannot run dilated, which DeepLabV3+ needs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import ConfigError
from .registry import ModelCard, SegRecipe, register_model

# name -> (smp architecture, encoder)
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "unet-densenet121": ("Unet", "densenet121"),
    "unet-inceptionresnetv2": ("Unet", "inceptionresnetv2"),
    "deeplabv3plus-xception": ("DeepLabV3Plus", "tu-xception65"),
}

_UNET_DECODER = (256, 128, 64, 32, 16)
AUTO, RANDOM = "auto", "random"
# Besides smp-hub, the ImageNet weights of smp's own encoders are the torch-hub files torchvision and Cadene's
# pretrainedmodels publish (what smp < 0.4 downloaded); smp's encoders load both layouts.
_TORCH_HUB_FILES = {"densenet121": "densenet121-a639ec97.pth", "inceptionresnetv2": "inceptionresnetv2-520b38e4.pth"}
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class EncoderWeights:
    """Where an encoder's initial weights come from: a local file (`path`, `source` says which kind and
    `digest` its sha256 prefix), or nowhere (random initialisation)."""

    encoder: str  # smp / timm (`tu-...`) encoder name
    path: str | None = None
    source: str = RANDOM  # "file:PATH", "hf-cache:REPO", "torch-hub:PATH" or "random"
    digest: str | None = None

    @property
    def pretrained(self) -> bool:
        """Whether the encoder starts from published (ImageNet) weights."""
        return self.path is not None


def _published(encoder: str) -> tuple[list[str], list[str]]:
    """(Hugging Face repos, torch-hub file names) an encoder's ImageNet weights are published under."""
    if encoder.startswith("tu-"):
        import timm

        try:
            cfg = timm.models.get_pretrained_cfg(encoder[3:])
        except RuntimeError:
            cfg = None
        if cfg is None:
            return [], []
        return ([cfg.hf_hub_id] if cfg.hf_hub_id else []), ([os.path.basename(cfg.url)] if cfg.url else [])
    from segmentation_models_pytorch.encoders import encoders as smp_encoders

    settings = smp_encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    return ([settings["repo_id"]] if settings else []), ([_TORCH_HUB_FILES[encoder]] if encoder in _TORCH_HUB_FILES
                                                          else [])


def _torch_hub_checkpoints() -> str:
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def find_encoder_weights(encoder: str, request: str = AUTO) -> EncoderWeights:
    """The weights an encoder starts from ("Training": ImageNet-pretrained encoders); nothing is downloaded.

    `request` is a local file (a .safetensors / .pt / .pth state dict, read with weights_only), "random", or
    "auto": the local Hugging Face cache (HF_HUB_CACHE / HF_HOME, read offline: smp-hub's or timm's repo of the
    encoder), then torch hub's (TORCH_HOME/hub/checkpoints: the torchvision / Cadene / timm file), else random.
    Raises ConfigError for a named file that does not exist."""
    from ..encoders.weights import weights_file_digest

    if request == RANDOM:
        return EncoderWeights(encoder)
    if request != AUTO:
        if not os.path.isfile(request):
            raise ConfigError(request, f"encoder weights file not found; to start {encoder} from ImageNet weights, "
                                       + how_to_get_encoder_weights(encoder))
        path = os.path.abspath(request)
        return EncoderWeights(encoder, path, f"file:{path}", weights_file_digest(path))
    from ..encoders.hub import cached_file

    repos, files = _published(encoder)
    for repo in repos:
        hit = cached_file(repo, _HF_FILES)
        if hit:
            return EncoderWeights(encoder, hit, f"hf-cache:{repo}", weights_file_digest(hit))
    for name in files:
        path = os.path.join(_torch_hub_checkpoints(), name)
        if os.path.isfile(path):
            return EncoderWeights(encoder, path, f"torch-hub:{path}", weights_file_digest(path))
    return EncoderWeights(encoder)


def how_to_get_encoder_weights(encoder: str, flag: str = "--encoder-weights FILE") -> str:
    """How to supply an encoder's ImageNet weights, as one sentence (for warnings and errors)."""
    from ..encoders.hub import cache_dir

    repos, files = _published(encoder)
    ways = [f"pass {flag} (a local .safetensors / .pth state dict of {encoder}'s ImageNet weights)"]
    if repos:
        ways.append(f"download them once with `hf download {repos[0]} model.safetensors` into the Hugging Face "
                    f"cache ({cache_dir()}; HF_HOME / HF_HUB_CACHE move it)")
    if files:
        ways.append(f"put {files[0]} in {_torch_hub_checkpoints()}")
    return ", or ".join(ways)


def _timm_state(encoder: str, state: dict, weights: EncoderWeights) -> dict:
    """A timm classifier checkpoint checked key by key against the architecture (timm itself loads a
    features-only model leniently: a missing tensor would silently stay random)."""
    import timm
    import torch

    from ..encoders.weights import check_strict

    with torch.device("meta"):
        full = timm.create_model(encoder[3:], pretrained=False)
    head = (full.pretrained_cfg or {}).get("classifier") or ()
    head = (head,) if isinstance(head, str) else tuple(head)
    # A batch-norm step counter is no weight; checkpoints often leave it out.
    counters = {k: torch.tensor(0) for k in full.state_dict() if k.endswith("num_batches_tracked") and k not in state}
    return check_strict(full, {**state, **counters}, weights.source, head)
# Attribute holding a frozen encoder's forward pre-hook.
_HOOK = "_slidegrid_freeze_hook"


def member_encoder(name: str, encoder: str | None = None) -> str:
    """The encoder a member is built with: `encoder` when overridden, else the paper's."""
    if name not in ARCHITECTURES:
        raise ConfigError("--model", f"unknown segmentation model {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return encoder or ARCHITECTURES[name][1]


def build_segmentation_model(name: str, in_channels: int = 3, n_classes: int = 2, encoder: str | None = None,
                             encoder_depth: int = 5, decoder_channels: int | Sequence[int] | None = None,
                             encoder_weights: EncoderWeights | None = None) -> nn.Module:
    """An ensemble member returning logits (B, n_classes, H, W); `encoder`/`encoder_depth`/`decoder_channels`
    shrink it (e.g. encoder="resnet18", encoder_depth=3) for tests and quick runs. `encoder_weights` (from
    `find_encoder_weights`) initialises the encoder from a local file; a file that does not fit the encoder
    (missing, unexpected or mis-shaped tensors; only a classifier head may be left over) is a ConfigError."""
    import segmentation_models_pytorch as smp  # here: importing smp + timm costs seconds in every Ray worker

    arch = ARCHITECTURES[name][0] if name in ARCHITECTURES else None
    enc = member_encoder(name, encoder)
    if not 3 <= encoder_depth <= 5:
        raise ConfigError("encoder_depth", f"{encoder_depth} is not in 3..5")
    common: dict[str, Any] = {"encoder_name": enc, "encoder_depth": encoder_depth, "encoder_weights": None,
                              "in_channels": in_channels, "classes": n_classes}
    state = None
    if encoder_weights is not None and encoder_weights.pretrained:
        from ..encoders.weights import load_state_dict

        state, _ = load_state_dict(encoder_weights.path, enc)
        if enc.startswith("tu-"):
            # timm maps a classifier checkpoint onto its features-only model (smp passes these kwargs to
            # timm.create_model): a state dict source, so timm never looks anywhere else.
            common.update(encoder_weights=True,
                          pretrained_cfg_overlay={"state_dict": _timm_state(enc, state, encoder_weights)})
            state = None
    if arch == "Unet":
        channels = tuple(decoder_channels or _UNET_DECODER[:encoder_depth])
        if len(channels) != encoder_depth:
            raise ConfigError("decoder_channels", f"a U-Net needs one width per encoder stage ({encoder_depth})")
        model = smp.Unet(decoder_channels=channels, decoder_interpolation="bilinear", **common)
    else:
        if decoder_channels is not None and not isinstance(decoder_channels, int):
            raise ConfigError("decoder_channels", "DeepLabV3+ takes a single decoder width")
        # Output stride 8 keeps a shallow encoder's last stage at the resolution DeepLabV3+'s decoder expects.
        stride = 16 if encoder_depth >= 4 else 8
        model = smp.DeepLabV3Plus(decoder_channels=decoder_channels or 256, encoder_output_stride=stride, **common)
    if state is not None:
        try:  # smp's own encoders drop the classifier and rename torchvision's old DenseNet keys; strict otherwise
            model.encoder.load_state_dict(dict(state))
        except RuntimeError as exc:
            raise ConfigError(encoder_weights.source, f"weights do not fit encoder {enc}: {str(exc)[:400]}") from None
    return model


def encoders(model: nn.Module) -> list[nn.Module]:
    """The encoder part(s) of a segmentation model: smp's `encoder`, or the MRN's per-resolution `encoders`."""
    if isinstance(getattr(model, "encoders", None), nn.ModuleList):
        return list(model.encoders)
    if isinstance(getattr(model, "encoder", None), nn.Module):
        return [model.encoder]
    raise ConfigError(type(model).__name__, "has no `encoder` or `encoders` to freeze")


def _keep_eval(module: nn.Module, _args: Any) -> None:
    module.eval()


def set_encoder_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (False) or release (True) the encoder(s): DigiPathAI trains only the decoder for the first two
    epochs. Frozen means no gradients and fixed batch-norm statistics, even after `model.train()`."""
    for enc in encoders(model):
        enc.requires_grad_(trainable)
        handle: RemovableHandle | None = getattr(enc, _HOOK, None)
        if handle is not None:
            handle.remove()
            delattr(enc, _HOOK)
        if trainable:
            enc.train(model.training)
        else:
            # A forward pre-hook, not a one-off eval(): training loops call model.train() every epoch.
            setattr(enc, _HOOK, enc.register_forward_pre_hook(_keep_eval))
            enc.eval()


def encoder_frozen(model: nn.Module) -> bool:
    """Whether every encoder parameter is frozen."""
    return not any(p.requires_grad for enc in encoders(model) for p in enc.parameters())


DIGIPATHAI = "papers/digipathai-ensemble-segmentation-framework.txt"
# "Loss function" (Eq. 3, Adam), "Training" (ImageNet encoders, DenseNet-121 / Inception-ResNet-V2 frozen for
# the first two epochs, "decayed every few epochs"), "Inference pipeline" (training patches 256 x 256),
# "Patch coordinate extraction" (the highest resolution). The paper gives no learning rate, decay step or
# factor, or batch size: ours, marked unstated.
_DIGIPATHAI_UNET = SegRecipe(
    source=f'{DIGIPATHAI} "Loss function", "Training", "Inference pipeline"', loss="hybrid", lr=1e-4, l2=0.0,
    freeze_epochs=2, lr_step=5, lr_gamma=0.5, batch_size=16, patch_size=256, mpps=(0.5,),
    unstated=("lr", "lr_step", "lr_gamma", "batch_size"))
# "Training": only the DenseNet-121 and Inception-ResNet-V2 networks froze their encoders; DeepLabV3+ was
# pretrained whole (PASCAL VOC) and trained end to end from the first epoch.
_DIGIPATHAI_DEEPLAB = replace(_DIGIPATHAI_UNET, freeze_epochs=0)
_RECIPES = {"unet-densenet121": _DIGIPATHAI_UNET, "unet-inceptionresnetv2": _DIGIPATHAI_UNET,
            "deeplabv3plus-xception": _DIGIPATHAI_DEEPLAB}
for _name in ARCHITECTURES:
    register_model(_name, partial(build_segmentation_model, _name), ModelCard(
        "segmentation", f'{DIGIPATHAI}, "Network architecture"', recipes={"segmentation": _RECIPES[_name]}))
