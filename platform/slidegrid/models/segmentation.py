"""The DigiPathAI ensemble members (papers/digipathai-ensemble-segmentation-framework.txt, "Network
architecture"): U-Net with a DenseNet-121 encoder, U-Net with Inception-ResNet-V2, DeepLabV3+ with Xception,
built with segmentation-models-pytorch; and encoder freezing for the first epochs ("Training").

Weights are never downloaded (`encoder_weights=None`): the paper's ImageNet / PASCAL VOC initialisation is
left to the caller, who may load a local checkpoint. The U-Net decoders upsample bilinearly, as the paper
says. Xception is timm's aligned Xception-65 (`tu-xception65`), the backbone DeepLabV3+ was designed with;
smp's own `xception` cannot run dilated, which DeepLabV3+ needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import ConfigError

# name -> (smp architecture, encoder)
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "unet-densenet121": ("Unet", "densenet121"),
    "unet-inceptionresnetv2": ("Unet", "inceptionresnetv2"),
    "deeplabv3plus-xception": ("DeepLabV3Plus", "tu-xception65"),
}

_UNET_DECODER = (256, 128, 64, 32, 16)
# Attribute holding a frozen encoder's forward pre-hook.
_HOOK = "_slidegrid_freeze_hook"


def build_segmentation_model(name: str, in_channels: int = 3, n_classes: int = 2, encoder: str | None = None,
                             encoder_depth: int = 5, decoder_channels: int | Sequence[int] | None = None
                             ) -> nn.Module:
    """An ensemble member returning logits (B, n_classes, H, W); `encoder`/`encoder_depth`/`decoder_channels`
    shrink it (e.g. encoder="resnet18", encoder_depth=3) for tests and quick runs."""
    if name not in ARCHITECTURES:
        raise ConfigError("--model", f"unknown segmentation model {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    import segmentation_models_pytorch as smp  # here: importing smp + timm costs seconds in every Ray worker

    arch, default_encoder = ARCHITECTURES[name]
    if not 3 <= encoder_depth <= 5:
        raise ConfigError("encoder_depth", f"{encoder_depth} is not in 3..5")
    common: dict[str, Any] = {"encoder_name": encoder or default_encoder, "encoder_depth": encoder_depth,
                              "encoder_weights": None, "in_channels": in_channels, "classes": n_classes}
    if arch == "Unet":
        channels = tuple(decoder_channels or _UNET_DECODER[:encoder_depth])
        if len(channels) != encoder_depth:
            raise ConfigError("decoder_channels", f"a U-Net needs one width per encoder stage ({encoder_depth})")
        return smp.Unet(decoder_channels=channels, decoder_interpolation="bilinear", **common)
    if decoder_channels is not None and not isinstance(decoder_channels, int):
        raise ConfigError("decoder_channels", "DeepLabV3+ takes a single decoder width")
    # Output stride 8 keeps a shallow encoder's last stage at the resolution DeepLabV3+'s decoder expects.
    stride = 16 if encoder_depth >= 4 else 8
    return smp.DeepLabV3Plus(decoder_channels=decoder_channels or 256, encoder_output_stride=stride, **common)


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


def register_segmentation_models(register) -> None:
    """Add every ensemble member to a registry taking register(name, factory(in_channels, n_outputs, **kw))."""
    for name in ARCHITECTURES:
        register(name, partial(build_segmentation_model, name))
