"""The presets whose weights ship only as Hugging Face `transformers` checkpoints (Phikon, Phikon-v2, Hibou-B,
Hibou-L, Midnight-12k) are timm networks fed through a key map (encoders/foundation/phikon.py). Shown here:

* a fabricated Hugging Face cache (the real `models--ORG--NAME/{refs,blobs,snapshots}` layout and file names,
  random weights written by the real transformers class of the family: ViTModel, Dinov2Model,
  Dinov2WithRegistersModel, at a narrow width) loads offline through `--encoder NAME` with no --weights, and
  the embeddings equal the transformers model's own (CLS of last_hidden_state, pooler_output, or CLS ⊕ mean
  patch token) on a batch of random tiles;
* the real-size presets build on the `meta` device with the parameter count and layer shapes of their sources;
* the map refuses what it cannot place: a foreign key, or a checkpoint of another family, is named by the
  strict check.

transformers is a test-only dependency (pyproject `dev` extra); slidegrid never imports it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from slidegrid.encoders.base import EncoderSpec
from slidegrid.encoders.foundation.hibou import hibou_kwargs
from slidegrid.encoders.foundation.midnight import midnight_kwargs
from slidegrid.encoders.foundation.phikon import dinov2_swiglu_hidden, hf_vit_to_timm
from slidegrid.encoders.preset import build_backbone, get_preset
from slidegrid.encoders.preset_encoder import build_preset
from slidegrid.encoders.weights import check_strict
from slidegrid.errors import ConfigError

# Narrow networks with every option of the real family (registers, SwiGLU, LayerScale, patch size, eps).
WIDTH, DEPTH, HEADS = 32, 2, 2


def _tiny_preset(name: str):
    """The registered preset with a narrow network of the same kind (the remap, head, mean/std, output and
    file names are the real preset's)."""
    preset = get_preset(name)
    if preset.family == "Hibou":
        kwargs = lambda: hibou_kwargs(WIDTH, DEPTH, HEADS)  # noqa: E731
    elif preset.family == "Midnight":
        kwargs = lambda: midnight_kwargs(WIDTH, DEPTH, HEADS)  # noqa: E731
    else:
        real = dict(preset.kwargs())
        kwargs = lambda: {**real, "embed_dim": WIDTH, "depth": DEPTH, "num_heads": HEADS}  # noqa: E731
    dim = WIDTH * (2 if preset.output == "cls+mean" else 1)
    return dataclasses.replace(preset, name=f"{name}-tiny", kwargs=kwargs, dim=dim)


def _reference(name: str, image_size: int):
    """The transformers model the checkpoint of `name` comes from, narrow, with random weights, and how its
    card turns the model output into the embedding."""
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        ViTConfig,
        ViTModel,
    )

    torch.manual_seed(0)
    common = dict(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS, image_size=image_size,
                  layer_norm_eps=1e-6, qkv_bias=True, hidden_act="gelu")
    if name == "phikon":  # owkin/phikon config.json: ViTModel, patch 16, 224, intermediate 4x, eps 1e-6
        model = ViTModel(ViTConfig(patch_size=16, intermediate_size=4 * WIDTH, **common))  # with its pooler
        embed = lambda out: out.last_hidden_state[:, 0]  # noqa: E731
    elif name == "phikon-v2":  # Dinov2Model ViT-L/16, plain MLP, LayerScale
        model = Dinov2Model(Dinov2Config(patch_size=16, mlp_ratio=4, use_swiglu_ffn=False, **common))
        embed = lambda out: out.last_hidden_state[:, 0]  # noqa: E731
    elif name.startswith("hibou"):  # histai/hibou-b config.json: patch 14, 224, 4 registers, SwiGLU
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
            patch_size=14, mlp_ratio=4, use_swiglu_ffn=True, num_register_tokens=4, **common))
        embed = lambda out: out.pooler_output  # noqa: E731
    else:  # midnight: facebook/dinov2-giant's config (patch 14, SwiGLU, image_size 518), CLS ⊕ mean patch
        model = Dinov2Model(Dinov2Config(patch_size=14, mlp_ratio=4, use_swiglu_ffn=True, **common))
        embed = lambda out: torch.cat([out.last_hidden_state[:, 0], out.last_hidden_state[:, 1:].mean(1)], -1)  # noqa: E731
    with torch.no_grad():  # LayerScale starts at 1 and biases at 0: make every parameter matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval(), embed


def _fabricate_cache(cache: Path, repo: str, model, weight_file: str) -> Path:
    """`model` saved as huggingface_hub lays a download out: blobs named by content hash, a snapshot folder
    of symlinks named by commit, refs/main naming the commit. Returns the snapshot folder."""
    staging = cache.parent / f"staging-{repo.replace('/', '--')}"
    model.save_pretrained(staging)  # config.json + model.safetensors, keys as the published files have them
    if weight_file == "pytorch_model.bin":
        from safetensors.torch import load_file

        torch.save(load_file(staging / "model.safetensors"), staging / "pytorch_model.bin")
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name in ("config.json", weight_file):
        data = (staging / name).read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    return snapshot


CASES = [  # (preset, weight file as published, the checkpoint config's image_size)
    ("phikon", "pytorch_model.bin", 224),
    ("phikon", "model.safetensors", 224),
    ("phikon-v2", "model.safetensors", 224),
    ("hibou-b", "model.safetensors", 224),
    ("hibou-l", "model.safetensors", 224),
    ("midnight-12k", "model.safetensors", 518),  # 37x37 position table, resampled to 16x16 as transformers does
    ("midnight-12k", "model.safetensors", 224),
]


@pytest.mark.parametrize(("name", "weight_file", "image_size"), CASES,
                         ids=[f"{n}-{f.split('.')[-1]}-{s}" for n, f, s in CASES])
def test_fabricated_hf_cache_loads_offline_and_matches_transformers(tmp_path, monkeypatch, name, weight_file,
                                                                     image_size):
    preset = _tiny_preset(name)
    reference, embed = _reference(name, image_size)
    cache = tmp_path / "hub"
    _fabricate_cache(cache, preset.hf_repo, reference, weight_file)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a network call would fail

    encoder = build_preset(preset, EncoderSpec(name=preset.name))  # no --weights: the HF cache, offline

    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    got = encoder.encode(tiles)
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(preset.mean).view(1, 3, 1, 1)) / torch.tensor(preset.std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = embed(reference(pixel_values=x)).numpy()
    assert got.shape == (3, preset.dim) == want.shape
    assert np.abs(want).mean() > 0.1  # a real signal, not two near-zero vectors
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["phikon", "hibou-b", "midnight-12k"])
def test_remap_runs_on_meta_tensors_as_the_driver_check_does(name):
    """check_weights reads a checkpoint's layout as `meta` tensors (no data): the remap must work on them."""
    preset = _tiny_preset(name)
    reference, _ = _reference(name, 518 if name == "midnight-12k" else 224)
    layout = {k: torch.empty_like(v, device="meta") for k, v in _saved_state(reference).items()}
    check_strict(build_backbone(preset, "meta"), preset.remap(layout), "layout", preset.head)


def _saved_state(model) -> dict:
    """The state dict as `save_pretrained` writes it (the published files' key names)."""
    import tempfile

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return load_file(os.path.join(d, "model.safetensors"))


def test_foreign_key_and_other_family_are_refused_by_name():
    preset = _tiny_preset("hibou-b")
    reference, _ = _reference("hibou-b", 224)
    state = _saved_state(reference)
    module = build_backbone(preset, "meta")
    with pytest.raises(ConfigError, match=r"unexpected \(e\.g\. encoder\.layer\.0\.attention\.extra\.weight"):
        check_strict(module, preset.remap({**state, "encoder.layer.0.attention.extra.weight": torch.zeros(1)}),
                     "ckpt", preset.head)
    phikon_state = _saved_state(_reference("phikon", 224)[0])  # a ViT-B/16 checkpoint into Hibou's ViT/14
    with pytest.raises(ConfigError, match="missing"):
        check_strict(module, preset.remap(phikon_state), "ckpt", preset.head)
    # the pooler is Phikon's declared head: accepted there, refused by a preset that declares none
    phikon = _tiny_preset("phikon")
    check_strict(build_backbone(phikon, "meta"), phikon.remap(phikon_state), "ckpt", phikon.head)
    with pytest.raises(ConfigError, match=r"unexpected \(e\.g\. pooler\.dense"):
        check_strict(build_backbone(phikon, "meta"), phikon.remap(phikon_state), "ckpt", ())


def test_incomplete_attention_is_left_for_the_strict_check_to_name():
    state = {f"encoder.layer.0.attention.attention.{p}.weight": torch.zeros(4, 4) for p in ("query", "key")}
    out = hf_vit_to_timm(state, grid=2)
    assert set(out) == set(state)  # no half-built qkv: both original names surface as unexpected


# Real sizes, built on the meta device: (preset, parameters built, stated, fc1 width, prefix tokens, pos grid)
REAL = [
    ("phikon", 85_798_656, 85.8, 3072, 1, 197),
    ("phikon-v2", 303_350_784, 303, 4096, 1, 197),
    ("hibou-b", 85_739_520, 85.7, 2 * dinov2_swiglu_hidden(768), 5, 256),
    ("hibou-l", 303_657_216, 304, 2 * dinov2_swiglu_hidden(1024), 5, 256),
    ("midnight-12k", 1_134_769_664, 1100, 2 * dinov2_swiglu_hidden(1536), 1, 257),
]


@pytest.mark.parametrize(("name", "built", "stated", "fc1", "prefix", "positions"), REAL, ids=[r[0] for r in REAL])
def test_real_size_presets_build_on_meta_with_their_sources_shapes(name, built, stated, fc1, prefix, positions):
    preset = get_preset(name)
    module = build_backbone(preset, "meta")
    count = sum(p.numel() for p in module.parameters())
    assert count == built
    digits = f"{stated:g}"  # within the rounding of the stated figure (85.7 -> 0.05, 304 -> 0.5, 1100 -> 50)
    tol = 0.5 * 10 ** -len(digits.split(".")[1]) if "." in digits else 0.5 * 10 ** (len(digits) - len(digits.rstrip("0")))
    assert abs(count / 1e6 - stated) <= tol
    assert module.blocks[0].mlp.fc1.out_features == fc1
    assert module.num_prefix_tokens == prefix and module.pos_embed.shape[1] == positions
    assert all(b.norm1.eps == 1e-6 for b in module.blocks) and module.norm.eps == 1e-6
    out = module.forward_features(torch.empty(1, 3, 224, 224, device="meta"))
    assert out.shape[-1] * (2 if preset.output == "cls+mean" else 1) == preset.dim


def test_presets_do_not_import_transformers():
    """The GPU path runs timm only: building and loading a preset never imports transformers."""
    import subprocess
    import sys

    code = ("import sys; from slidegrid.encoders.preset import get_preset, build_backbone; "
            "[build_backbone(get_preset(n), 'meta') for n in ('phikon', 'hibou-b', 'midnight-12k')]; "
            "print(json.dumps('transformers' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) is False
