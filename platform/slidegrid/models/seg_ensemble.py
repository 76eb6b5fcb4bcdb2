"""A trained segmentation ensemble as one object (papers/digipathai-ensemble-segmentation-framework.txt,
"Network architecture": members trained on different folds, predictions averaged), with what inference
needs to feed it: the patch mpp(s), the training patch size and the normalization.

Stored two ways: a local checkpoint (`ensemble.pt`: plain dicts and tensors, read with
torch.load(weights_only=True) and rebuilt from the model registry) and an MLflow model (the module itself,
registered as one ensemble: `models:/NAME/VERSION`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


class SegmentationEnsemble(nn.Module):
    """Members (each (B, [J,] 3, S, S) -> logits (B, 2, S, S)) and their inference settings in `spec`:
    names, kwargs, mpps, patch_size, mean, std."""

    def __init__(self, members: Sequence[nn.Module], spec: Mapping[str, Any]) -> None:
        super().__init__()
        if not members:
            raise ConfigError("ensemble", "has no members")
        self.members = nn.ModuleList(members)
        self.spec = dict(spec)

    @property
    def mpps(self) -> tuple[float, ...]:
        """Input resolutions, highest first (one for U-Net / DeepLab members, J for MRN)."""
        return tuple(float(m) for m in self.spec["mpps"])

    @property
    def multiple(self) -> int:
        """Inference tiles must be a multiple of this many pixels (encoder strides, MRN crops)."""
        return max(int(getattr(m, "multiple", 32)) for m in self.members)

    def subset(self, n: int) -> SegmentationEnsemble:
        """The first n members (benchmarks: one member vs the ensemble)."""
        if not 1 <= n <= len(self.members):
            raise ConfigError("--members", f"{n} is not within 1..{len(self.members)}")
        return SegmentationEnsemble(list(self.members)[:n], self.spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean tumour-class probabilities over members, (B, 2, S, S)."""
        return torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(dim=0)


def save_ensemble(path: str, members: Sequence[Mapping[str, Any]], spec: Mapping[str, Any]) -> None:
    """Write `ensemble.pt`: spec + per member {name, kwargs, state} (state: a state dict)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    torch.save({"spec": dict(spec), "members": [dict(m) for m in members]}, tmp)
    os.replace(tmp, path)


def _from_checkpoint(path: str) -> SegmentationEnsemble:
    from . import build_model

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(path, "model checkpoint not found; give ensemble.pt from `slidegrid train-seg` or "
                                "an MLflow URI models:/NAME/VERSION") from None
    except Exception as exc:
        raise ConfigError(path, f"not a slidegrid segmentation checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or "members" not in data or "spec" not in data:
        raise ConfigError(path, "not a slidegrid segmentation checkpoint (no members/spec)")
    members = []
    for m in data["members"]:
        net = build_model(m["name"], 3, 2, **m["kwargs"])
        net.load_state_dict(m["state"])
        members.append(net)
    return SegmentationEnsemble(members, data["spec"])


def load_ensemble(uri: str, tracking_uri: str | None = None) -> SegmentationEnsemble:
    """An ensemble in eval mode from a local `ensemble.pt` or an MLflow model URI (models:/, runs:/)."""
    if uri.startswith(("models:/", "runs:/")):
        import mlflow

        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        try:
            model = mlflow.pytorch.load_model(uri, map_location="cpu")
        except Exception as exc:
            raise ConfigError(uri, f"cannot load the MLflow model ({type(exc).__name__}: {str(exc)[:300]}); check "
                                   "--tracking-uri and the name/version") from None
        if not isinstance(model, SegmentationEnsemble):
            raise ConfigError(uri, f"is a {type(model).__name__}, not a segmentation ensemble from train-seg")
    else:
        model = _from_checkpoint(uri)
    return model.eval()
