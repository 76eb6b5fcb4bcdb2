"""Tile encoders behind one registry: a name (and weights) resolves to a model plus its preprocessing."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .base import Encoder, EncoderSpec
from .learned import METHODS as LEARNED_METHODS
from .mean_rgb import MeanRGBEncoder
from .preset import all_presets, find_preset

# name -> factory(spec). Prefix entries ("timm:") take the rest of the name as an argument.
_REGISTRY: dict[str, Callable[[EncoderSpec], Encoder]] = {
    "mean-rgb": lambda spec: MeanRGBEncoder(),
}
_PREFIXES: dict[str, Callable[[str, EncoderSpec], Encoder]] = {}


def register(name: str, factory: Callable[[EncoderSpec], Encoder]) -> None:
    """Add an encoder under `name` (used by trained encoders)."""
    _REGISTRY[name] = factory


def register_prefix(prefix: str, factory: Callable[[str, EncoderSpec], Encoder]) -> None:
    """Add a family of encoders `prefix:ARG` (e.g. timm:resnet50)."""
    _PREFIXES[prefix] = factory


def _timm(arch: str, spec: EncoderSpec) -> Encoder:
    from .timm_encoder import build_timm

    return build_timm(arch, spec)


register_prefix("timm", _timm)


def _learned(method: str) -> Callable[[EncoderSpec], Encoder]:
    def factory(spec: EncoderSpec) -> Encoder:
        from .learned import build_learned

        return build_learned(method, spec)

    return factory


for _method in LEARNED_METHODS:  # trained by `slidegrid train-encoder`
    register(_method, _learned(_method))


def available() -> list[str]:
    """Names users can pass to --encoder."""
    return sorted(_REGISTRY) + [p.name for p in all_presets()] + [f"{p}:NAME" for p in sorted(_PREFIXES)]


def check_encoder_name(name: str) -> None:
    """ConfigError listing the choices unless `name` is a registered encoder, a preset or PREFIX:ARG (nothing is
    built: configs check names on construction)."""
    prefix, _, arg = name.partition(":")
    if name not in _REGISTRY and find_preset(name) is None and not (arg and prefix in _PREFIXES):
        raise ConfigError("--encoder", f"unknown encoder {name!r}; choose one of {', '.join(available())}")


def build_encoder(spec: EncoderSpec) -> Encoder:
    """Instantiate the encoder a spec names; unknown names are a ConfigError listing the choices."""
    check_encoder_name(spec.name)
    if spec.name in _REGISTRY:
        return _REGISTRY[spec.name](spec)
    preset = find_preset(spec.name)  # published foundation models (encoders/foundation/), by name
    if preset is not None:
        from .preset_encoder import build_preset

        return build_preset(preset, spec)
    prefix, _, arg = spec.name.partition(":")
    return _PREFIXES[prefix](arg, spec)


__all__ = ["Encoder", "EncoderSpec", "available", "build_encoder", "check_encoder_name", "register",
           "register_prefix"]
