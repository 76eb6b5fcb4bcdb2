"""Learned tile encoders in the registry: `--encoder vae|contrastive|bigan|supervised --weights W`, where W is
a file written by `slidegrid train-encoder`, an MLflow model URI of one, or `random` (untrained, NIC §4.4's
lower bound). The file/module carries its preprocessing: method, network geometry, tile size, mpp and
normalization, so encoding applies exactly what training saw.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import EncoderSpec

if TYPE_CHECKING:
    from .method import TileMethod
    from .nets import Embedder, NetConfig
    from .torch_encoder import TorchEncoder

# The learned methods: each is the module encoders/<name>.py, whose class registers itself with its card
# (method.register_method). Only the names are here, so that checking an --encoder or --method name imports no torch.
METHODS = ("vae", "contrastive", "bigan", "supervised")
# `--weights random` has no file to read the geometry from: NIC's P = 128 px at 0.5 µm/px, C = 128 (§4.3).
RANDOM_MPP = 0.5


def method_class(method: str) -> type[TileMethod]:
    """The registered class of a learned method (its card: rows, default_lr, options); ConfigError for a name
    that is not one."""
    if method not in METHODS:
        raise ConfigError("--method", f"{method!r} is not one of {', '.join(METHODS)}")
    from .method import registered_method

    cls = registered_method(method)
    if cls is None:  # its module registers it on import
        importlib.import_module(f"{__package__}.{method}")
        cls = registered_method(method)
    return cls


def build_method(method: str, net: NetConfig, **kwargs: Any) -> TileMethod:
    """The trainable networks of a method."""
    return method_class(method)(net, **kwargs)


def encoder_meta(method: TileMethod, mpp: float) -> dict[str, Any]:
    """The preprocessing and geometry that travel with a trained encoder."""
    from .. import __version__
    from .nets import NORM_MEAN, NORM_STD

    return {"method": method.name, "net": method.net.to_dict(), "out_features": method.encoder.fc.out_features,
            "relu": method.relu_embedding, "tile_size": method.net.tile_size, "mpp": float(mpp),
            "mean": list(NORM_MEAN), "std": list(NORM_STD), "slidegrid_version": __version__}


def save_encoder(path: str, method: TileMethod, mpp: float) -> str:
    """Write the embedder (weights + meta) as a torch file loadable with weights_only=True; returns the path."""
    return _save(path, encoder_meta(method, mpp), method.embedder({}).state_dict())


def _save(path: str, meta: dict[str, Any], state_dict: dict[str, Any]) -> str:
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    torch.save({"slidegrid_encoder": meta, "state_dict": state_dict}, tmp)
    os.replace(tmp, path)  # atomic: a killed run never leaves half a weights file under the final name
    return path


def save_random_twin(name: str, weights: str, path: str) -> str:
    """The random-weights twin of a trained encoder (a file or MLflow URI of `train-encoder`): the same network
    geometry, tile size, mpp and normalization, initialized with seed 0 and never trained, written as an encoder
    file at `path` (returned). Probed beside the trained one, it separates what training learned from what the
    architecture alone gives. (`--weights random` is NIC's default geometry, not the trained encoder's.)"""
    import torch

    embedder, digest = load_embedder(name, weights)
    with torch.random.fork_rng():  # the caller's random state is left alone
        torch.manual_seed(0)
        twin = embedder_from_meta(embedder.meta)
    return _save(path, {**embedder.meta, "random_twin_of": digest}, twin.state_dict())


def embedder_from_meta(meta: dict[str, Any]) -> Embedder:
    """An (untrained) Embedder with the geometry a meta dict describes."""
    from .nets import ConvEncoder, Embedder, NetConfig

    net = NetConfig(**meta["net"])
    return Embedder(ConvEncoder(net, int(meta["out_features"])), net.code_size, bool(meta["relu"]), meta)


def load_encoder_file(path: str, name: str) -> tuple[Embedder, str]:
    """The Embedder in a file written by `train-encoder` (weights only), and the file's digest."""
    from .weights import read_checkpoint

    obj, digest = read_checkpoint(path, name)
    if not isinstance(obj, dict) or "slidegrid_encoder" not in obj:
        raise ConfigError(path, f"not a slidegrid encoder file; train one with `slidegrid train-encoder --method "
                                f"{name}` (or use --encoder timm:ARCH for timm checkpoints)")
    embedder = embedder_from_meta(obj["slidegrid_encoder"])
    try:
        embedder.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise ConfigError(path, f"weights do not fit the encoder they describe ({str(exc)[:200]})") from None
    return embedder, digest


def load_embedder(name: str, weights: str) -> tuple[Embedder, str]:
    """The Embedder of learned method `name` that `weights` names (a `train-encoder` file, an MLflow model URI
    of one, or `random`: NIC's geometry, seed 0) and its digest; ConfigError when it is not one of `name`."""
    from .nets import NetConfig
    from .weights import is_mlflow_uri, load_mlflow_module

    if weights == "random":
        import torch

        # The same "random" encoder every time (its grids' settings hash stays valid), without touching the
        # caller's random state.
        with torch.random.fork_rng():
            torch.manual_seed(0)
            method = build_method(name, NetConfig())
        embedder, digest = method.embedder(encoder_meta(method, RANDOM_MPP)), "random"
    elif is_mlflow_uri(weights):
        embedder, digest = load_mlflow_module(weights)
        if not hasattr(embedder, "meta"):
            raise ConfigError(weights, "the MLflow model is not a slidegrid encoder (no preprocessing meta)")
    else:
        embedder, digest = load_encoder_file(weights, name)
    if embedder.meta["method"] != name:
        raise ConfigError(weights, f"holds a {embedder.meta['method']} encoder, not {name}; pass --encoder "
                                   f"{embedder.meta['method']}")
    return embedder, digest


def build_learned(name: str, spec: EncoderSpec) -> TorchEncoder:
    """The registry factory of a learned method: weights from a file, an MLflow URI, or `random`."""
    if not spec.weights:
        raise ConfigError(name, "needs --weights: a file written by `slidegrid train-encoder`, its MLflow model URI "
                                "(models:/slidegrid-encoder-NAME/VERSION), or 'random' for an untrained network")
    embedder, digest = load_embedder(name, spec.weights)
    return as_encoder(embedder, spec, digest)


def as_encoder(embedder: Embedder, spec: EncoderSpec, digest: str) -> TorchEncoder:
    """An Embedder as a registry Encoder, normalizing tiles as its meta says and pinned to its tile geometry."""
    from .torch_encoder import TorchEncoder

    meta = embedder.meta
    enc = TorchEncoder(spec.name, embedder, embedder.code_size, tuple(meta["mean"]), tuple(meta["std"]), spec,
                       digest)
    enc.tile_size, enc.mpp = int(meta["tile_size"]), float(meta["mpp"])
    return enc
