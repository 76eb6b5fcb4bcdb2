"""Any timm backbone as a tile encoder (`timm:resnet34` = the attention paper's 512-d pooled features)."""

from __future__ import annotations

from ..errors import ConfigError
from .base import EncoderSpec
from .torch_encoder import TorchEncoder
from .weights import is_mlflow_uri, load_mlflow_module, load_state_dict, load_strict


def build_timm(arch: str, spec: EncoderSpec) -> TorchEncoder:
    """timm model `arch` with its classifier removed (global-average-pool features), weights from spec."""
    import timm
    import torch

    if not spec.weights:
        raise ConfigError(spec.name, "needs --weights: a local checkpoint file, an MLflow model URI "
                                     "(models:/name/version), or 'random' for untrained weights; nothing is "
                                     "downloaded at run time")
    if is_mlflow_uri(spec.weights):
        module, digest = load_mlflow_module(spec.weights)
    else:
        try:
            # Seeded: `random` must be one network everywhere (every actor, restarted process and resumed run
            # shares one settings hash), as for the learned encoders; the caller's random state is left alone.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                module = timm.create_model(arch, pretrained=False, num_classes=0)
        except Exception as exc:  # timm raises RuntimeError("Unknown model ...")
            raise ConfigError(spec.name, f"unknown timm architecture ({exc}); see timm.list_models()") from None
        if spec.weights == "random":
            digest = "random:seed0"  # not "random": grids from the unseeded networks of before are redone
        else:
            state, digest = load_state_dict(spec.weights, spec.name)
            # Checkpoints with a classifier head load too: the head is dropped, every other key must fit.
            head = (getattr(module, "pretrained_cfg", None) or {}).get("classifier") or ()
            load_strict(module, state, spec.weights, (head,) if isinstance(head, str) else tuple(head))
    cfg = getattr(module, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    dim = getattr(module, "num_features", None)
    if dim is None:
        raise ConfigError(spec.name, "the model does not report num_features; cannot size the grid")
    return TorchEncoder(spec.name, module, int(dim), mean, std, spec, digest)
