"""A preset as a registry encoder (`--encoder uni2-h`): its weights located, checked key by key against the
architecture, and loaded into a network built on the `meta` device (no random initialization of a billion
parameters only to overwrite them).

Where the weights come from, in this order:
  --weights random           the preset's network, seeded (one network in every process, as timm:ARCH does)
  --weights hf-hub:ORG/NAME  downloaded into the Hugging Face cache (only the weight file), when asked
  --weights FILE             a .safetensors / .bin / .pth / .pt checkpoint
  --weights DIR              a downloaded snapshot folder (the preset's weight file name in it), or a
                             models--ORG--NAME folder of a Hugging Face cache
  (none)                     the preset's Hugging Face repo in the local HF cache, never the network
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..errors import ConfigError
from .base import EncoderSpec
from .hub import HF_HUB_PREFIX, cache_dir, cached_file, download, how_to_get
from .preset import Preset, build_backbone, preset_module
from .weights import (
    check_strict,
    is_mlflow_uri,
    load_state_dict,
    load_strict,
    read_layout,
    weights_file_digest,
)

log = logging.getLogger(__name__)

RANDOM_DIGEST = "random:seed0"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


@dataclass(frozen=True)
class PresetWeights:
    """Where a preset's weights were found: a local file (None for random weights), its digest, and how."""

    path: str | None
    digest: str
    source: str  # "random", "file", "folder", "HF cache" or "hf-hub"


def locate_weights(preset: Preset, weights: str | None) -> PresetWeights:
    """The local weight file `weights` names for `preset` (downloading only for `hf-hub:`), and its digest
    (sha256 of the file, streamed: nothing is built or loaded)."""
    if weights == "random":
        return PresetWeights(None, RANDOM_DIGEST, "random")
    if is_mlflow_uri(weights):
        raise ConfigError(weights, f"preset {preset.name} loads a checkpoint file, not an MLflow model; pass "
                                   "--weights FILE, DIR, hf-hub:ORG/NAME or random")
    if weights and weights.startswith(HF_HUB_PREFIX):
        path = download(weights[len(HF_HUB_PREFIX):], preset.weight_files, preset.name, preset.gated)
        source = "hf-hub"
    elif weights:
        path = _local(preset, weights)
        source = "folder" if os.path.isdir(os.path.expanduser(weights)) else "file"
    else:
        if not preset.hf_repo:
            raise ConfigError(preset.name, "needs --weights FILE or DIR (a local checkpoint), or --weights random")
        path = cached_file(preset.hf_repo, preset.weight_files)
        if path is None:
            raise ConfigError(preset.name, f"weights not found locally: {preset.hf_repo} is not in the Hugging Face "
                                           f"cache ({cache_dir()}) and nothing is downloaded unasked. To get them, "
                                           + how_to_get(preset.hf_repo, preset.weight_files, preset.gated))
        source = "HF cache"
    return PresetWeights(path, weights_file_digest(path), source)


def _local(preset: Preset, weights: str) -> str:
    path = os.path.expanduser(weights)
    if os.path.isdir(path):
        for name in preset.weight_files:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        folder = os.path.basename(os.path.normpath(path))
        if folder.startswith("models--") and os.path.isdir(os.path.join(path, "snapshots")):
            # A repo folder of a Hugging Face cache (models--ORG--NAME): its current snapshot.
            repo = folder[len("models--"):].replace("--", "/", 1)
            hit = cached_file(repo, preset.weight_files, os.path.dirname(os.path.normpath(path)))
            if hit is not None:
                return hit
        present = sorted(n for n in os.listdir(path) if n.endswith(WEIGHT_SUFFIXES))
        raise ConfigError(weights, f"folder has none of the weight files of {preset.name} "
                                   f"({', '.join(preset.weight_files)}); it holds "
                                   f"{', '.join(present) or 'no checkpoint'}: pass --weights FILE for one of them")
    if not os.path.isfile(path):
        hint = how_to_get(preset.hf_repo, preset.weight_files, preset.gated) if preset.hf_repo else \
            "pass --weights FILE or DIR (a local checkpoint), or --weights random"
        raise ConfigError(weights, f"weights for {preset.name} not found: no such file or folder. To get them, {hint}")
    return path


def _fit(check, module, state: dict, path: str, preset: Preset, **kw):
    """check_strict / load_strict, the error naming the preset (the likely fix is another preset)."""
    if preset.remap is not None:
        state = preset.remap(state)
    try:
        return check(module, state, path, preset.head, **kw)
    except ConfigError as exc:
        raise ConfigError(exc.input, f"{exc.reason}; or the checkpoint is not {preset.name}'s "
                                     f"({preset.hf_repo or preset.arch}): pick the preset it belongs to") from None


def check_weights(preset: Preset, path: str) -> None:
    """Refuse a checkpoint that does not fit the preset, on the driver: its key names and shapes (no tensor
    data is read) against the network built on the `meta` device (no memory). A remap that cannot run on
    shapes alone leaves the check to the actors' strict load."""
    module, layout = build_backbone(preset, "meta"), read_layout(path, preset.name)
    try:
        _fit(check_strict, module, layout, path, preset)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001
        log.info("%s: checkpoint not checked on the driver (%s: %s); the encoder actors load it strictly",
                 preset.name, type(exc).__name__, exc)


def build_preset(preset: Preset, spec: EncoderSpec):
    """The preset's network with the weights `spec.weights` names, as a TorchEncoder that resizes tiles to the
    model's input and returns the preset's output tokens; tile_size/mpp say the geometry it was trained on
    (informational: any tile is resized to the model's input)."""
    import torch

    from .torch_encoder import TorchEncoder

    located = locate_weights(preset, spec.weights)
    if located.path is None:
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left alone
            torch.manual_seed(0)
            backbone = build_backbone(preset)
    else:
        state, _ = load_state_dict(located.path, preset.name)
        backbone = build_backbone(preset, "meta")
        _fit(load_strict, backbone, state, located.path, preset, assign=True)
        backbone = backbone.float()  # half-precision checkpoints run in float32 (autocast does the rest on GPU)
        if any(t.is_meta for t in (*backbone.parameters(), *backbone.buffers())):
            # A buffer the checkpoint does not hold (non-persistent): build for real and copy the weights in.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                backbone = build_backbone(preset)
            _fit(load_strict, backbone, state, located.path, preset)
    enc = TorchEncoder(spec.name, preset_module(preset, backbone), preset.dim, preset.mean, preset.std, spec,
                       located.digest)
    enc.tile_size, enc.mpp = preset.tile_size, preset.mpp
    return enc
