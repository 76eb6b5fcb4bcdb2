"""Loading encoder weights from a local file or an MLflow model URI; never from the internet unasked."""

from __future__ import annotations

import os

from ..errors import ConfigError
from .base import file_digest

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def is_mlflow_uri(weights: str | None) -> bool:
    """True for MLflow model URIs (models:/name/version, runs:/id/path)."""
    return bool(weights) and weights.startswith(MLFLOW_SCHEMES)


def read_checkpoint(path: str, encoder: str):
    """The object saved in a .pt/.pth/.bin (torch, weights only) or .safetensors file, and its digest."""
    import torch

    if not os.path.isfile(path):
        raise ConfigError(path, f"weights file for encoder {encoder!r} not found; pass --weights FILE "
                                "(a local checkpoint), an MLflow model URI, or --weights random")
    with open(path, "rb") as f:
        digest = file_digest(f.read())
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(path, f"cannot load weights ({type(exc).__name__}: {exc}); expected a torch "
                                "state dict (.pt/.pth) or .safetensors file") from None
    return state, digest


def load_state_dict(path: str, encoder: str) -> tuple[dict, str]:
    """A state dict from a .pt/.pth/.bin (torch, weights only) or .safetensors file, and its digest."""
    state, digest = read_checkpoint(path, encoder)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(path, "the file holds no state dict; save with torch.save(model.state_dict(), path)")
    return state, digest


def load_mlflow_module(uri: str):
    """The torch module logged at an MLflow model URI, and a digest of the URI's resolved version."""
    import mlflow.pytorch

    try:
        module = mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as exc:
        raise ConfigError(uri, f"cannot load the MLflow model ({type(exc).__name__}: {str(exc)[:200]}); "
                               "check the URI and MLFLOW_TRACKING_URI / --tracking-uri") from None
    return module, file_digest(uri.encode())


def load_strict(module, state: dict, source: str, head: tuple[str, ...] = ()) -> None:
    """Load a state dict into `module`, accounting for every key on both sides.

    `torch.nn.Module.load_state_dict(strict=False)` drops what it does not know without a word: a ViT saved
    with LayerScale (UNI, Virchow2, H-optimus) loaded into a plain ViT lost its `ls1/ls2` gammas and gave
    embeddings off by up to 3.6. Here only keys under the checkpoint's classification `head` (module names,
    e.g. timm's `pretrained_cfg["classifier"]`) may be left over; a DDP `module.` prefix is removed. Raises
    ConfigError naming the first missing / unexpected / mis-shaped keys and the likely fix.
    """
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = module.state_dict()
    shaped = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not k.startswith(tuple(f"{h}." for h in head))]
    if shaped or missing or unexpected:
        parts = [f"{len(x)} {what} (e.g. {', '.join(x[:3])})" for what, x in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)) if x]
        raise ConfigError(source, "weights do not match the architecture: " + "; ".join(parts) + ". Check the "
                                  "architecture and its options (a ViT saved with LayerScale needs init_values, "
                                  "one with register tokens reg_tokens, another patch size or width another "
                                  "model name)")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
