"""Loading encoder weights from a local file or an MLflow model URI; never from the internet unasked."""

from __future__ import annotations

import hashlib
import os

from ..errors import ConfigError
from .base import file_digest

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def is_mlflow_uri(weights: str | None) -> bool:
    """True for MLflow model URIs (models:/name/version, runs:/id/path)."""
    return bool(weights) and weights.startswith(MLFLOW_SCHEMES)


# (real path, size, mtime) -> digest: a multi-GB checkpoint is hashed once per process, not per look.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_file_digest(path: str) -> str:
    """`file_digest` of a file's bytes, read in 16 MiB blocks (a ViT-g checkpoint is 4.5 GB)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(real, "rb") as f:
            while block := f.read(1 << 24):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()[:16]
    return _DIGESTS[key]


def _missing_file(path: str, encoder: str) -> ConfigError:
    return ConfigError(path, f"weights file for encoder {encoder!r} not found; pass --weights FILE "
                             "(a local checkpoint), an MLflow model URI, or --weights random")


def read_checkpoint(path: str, encoder: str):
    """The object saved in a .pt/.pth/.bin (torch, weights only) or .safetensors file, and its digest."""
    import torch

    if not os.path.isfile(path):
        raise _missing_file(path, encoder)
    digest = weights_file_digest(path)
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


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def read_layout(path: str, encoder: str) -> dict:
    """The state dict of a checkpoint file as `meta` tensors (names, shapes and dtypes; no data is read), to
    check a checkpoint against an architecture on the driver without loading gigabytes."""
    import json
    import struct

    import torch

    if not os.path.isfile(path):
        raise _missing_file(path, encoder)
    try:
        if path.endswith(".safetensors"):
            with open(path, "rb") as f:
                size = struct.unpack("<Q", f.read(8))[0]
                if size > os.path.getsize(path):
                    raise ValueError("no safetensors header")
                header = json.loads(f.read(size))
            state = {k: torch.empty(v["shape"], dtype=getattr(torch, _SAFETENSORS_DTYPES.get(v["dtype"], "float32")),
                                    device="meta")
                     for k, v in header.items() if k != "__metadata__"}
        else:
            state = torch.load(path, map_location="meta", weights_only=True)
    except Exception as exc:
        raise ConfigError(path, f"cannot load weights ({type(exc).__name__}: {exc}); expected a torch "
                                "state dict (.pt/.pth/.bin) or .safetensors file") from None
    return unwrap_state(state, path)


def unwrap_state(state, path: str) -> dict:
    """The state dict inside a checkpoint object (under "state_dict", "model" or "model_state_dict" if nested)."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(path, "the file holds no state dict; save with torch.save(model.state_dict(), path)")
    return state


def load_state_dict(path: str, encoder: str) -> tuple[dict, str]:
    """A state dict from a .pt/.pth/.bin (torch, weights only) or .safetensors file, and its digest."""
    state, digest = read_checkpoint(path, encoder)
    return unwrap_state(state, path), digest


def load_mlflow_module(uri: str):
    """The torch module logged at an MLflow model URI, and a digest of the URI's resolved version."""
    import mlflow.pytorch

    try:
        module = mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as exc:
        raise ConfigError(uri, f"cannot load the MLflow model ({type(exc).__name__}: {str(exc)[:200]}); "
                               "check the URI and MLFLOW_TRACKING_URI / --tracking-uri") from None
    return module, file_digest(uri.encode())


def load_strict(module, state: dict, source: str, head: tuple[str, ...] = (), assign: bool = False) -> None:
    """Load a state dict into `module`, accounting for every key on both sides (`check_strict`); `assign`
    takes the checkpoint's tensors as they are (into a module built on the `meta` device)."""
    module.load_state_dict(check_strict(module, state, source, head), strict=True, assign=assign)


def check_strict(module, state: dict, source: str, head: tuple[str, ...] = ()) -> dict:
    """The part of `state` that `module` takes, once every key on both sides is accounted for.

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
    return {k: v for k, v in state.items() if k in own}
