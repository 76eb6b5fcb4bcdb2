"""Phikon and Phikon-v2 (Owkin), and the transformers → timm key map every transformers-format preset uses.

Why a key map and not the `transformers` library. Phikon, Phikon-v2, Hibou and Midnight ship their weights
only as Hugging Face `transformers` checkpoints (ViTModel / Dinov2Model / Hibou's custom
Dinov2ModelWithRegisters). Every one of them is a plain ViT that timm's VisionTransformer builds exactly
(LayerScale = `init_values`, registers = `reg_tokens` with `no_embed_class`, DINOv2's SwiGLU FFN =
`SwiGLUPacked`), so `hf_vit_to_timm` renames their state dicts into timm's keys instead of running
transformers:
  * one module type on every path: the GPU actor (bf16 autocast, torch.compile, batch-size probe), the
    `meta`-device builds that check a checkpoint's keys and shapes on the driver without memory, the strict
    key accounting (`weights.check_strict`) and `preset_module`'s CLS / CLS+mean outputs are the ones the
    timm-native presets (UNI, Virchow, H-optimus, ...) already use;
  * no heavy runtime dependency (transformers 5 brings tokenizers, typer, rich, ...) and no
    `trust_remote_code`: Hibou's card loads custom modelling code written for transformers 4 (its config
    imports `transformers.onnx`, gone in transformers 5); its checkpoint is the standard DINOv2-with-registers
    layout and loads here without that code;
  * exactness is tested, not assumed: tests/encoders/test_presets_hf.py saves the real transformers classes (ViTModel,
    Dinov2Model, Dinov2WithRegistersModel; transformers is a test-only dependency) with random weights in the
    Hub's cache layout and file names, loads them offline through the preset and compares embeddings.

The map (transformers names as `save_pretrained` writes them, which is the layout of the published files;
the transformers-5 in-memory names are accepted too):
  embeddings.cls_token                           → cls_token (+ the CLS position when `fold_cls_pos`)
  embeddings.position_embeddings                 → pos_embed, resampled to the preset's patch grid exactly as
                                                   transformers does at that input size (float32 bicubic,
                                                   align_corners=False, no antialias) when the checkpoint's
                                                   grid differs (Midnight's config is 518 px: 37×37 → 16×16)
  embeddings.register_tokens                     → reg_token
  embeddings.mask_token                          → dropped (DINOv2/iBOT masked-image-modelling token, used
                                                   only in training with bool_masked_pos)
  embeddings.patch_embeddings.projection.*       → patch_embed.proj.*
  layernorm.*                                    → norm.*
  encoder.layer.N.attention.attention.{query,key,value}.* → blocks.N.attn.qkv.* (rows q | k | v)
  encoder.layer.N.attention.output.dense.*       → blocks.N.attn.proj.*
  encoder.layer.N.{layernorm_before,norm1}.*     → blocks.N.norm1.*
  encoder.layer.N.{layernorm_after,norm2}.*      → blocks.N.norm2.*
  encoder.layer.N.layer_scale{1,2}.lambda1       → blocks.N.ls{1,2}.gamma
  encoder.layer.N.{intermediate.dense,mlp.fc1,mlp.weights_in}.* → blocks.N.mlp.fc1.*
  encoder.layer.N.{output.dense,mlp.fc2,mlp.weights_out}.*      → blocks.N.mlp.fc2.*
Anything else (ViTModel's `pooler.*`, or a foreign key) is passed through unchanged, so the strict check
either accepts it as the preset's declared `head` or names it. With registers, timm adds `pos_embed` to the
patches only (`no_embed_class`); transformers adds the CLS position to the CLS token before inserting the
registers, a constant that `fold_cls_pos` adds into `cls_token` once (timm's own DINOv2-reg conversion does
the same), so the token sequences are identical: [CLS, registers, patches].

Phikon (owkin/phikon): iBOT ViT-B/16 on 40M TCGA tiles at 20x (0.5 µm/px), 224 px input, ImageNet mean/std,
embedding = CLS of `last_hidden_state` (768-d; model card and Filiot et al., medRxiv 2023.07.21.23292757),
layer_norm_eps 1e-6 (owkin/phikon discussion #1, merged: "layer_norm_eps=1e-6 following iBOT official
implementation"), 85.8M parameters (timm port card https://huggingface.co/1aurent/vit_base_patch16_224.owkin_pancancer:
"Params (M): 85.8"), Owkin non-commercial licence ("license: other"), not gated. Files: model.safetensors and
pytorch_model.bin (ViTModel, so the checkpoint may hold the unused `pooler.*`: declared as head).
ImageNet mean/std as in Trident (mahmoodlab/TRIDENT trident/patch_encoder_models/load.py, PhikonInferenceEncoder)
and STAMP.

Phikon-v2 (owkin/phikon-v2): "Pretrained vision backbone (ViT-L/16 via DINOv2)" on PANCAN-XL, 450M 20x tiles
(model card https://huggingface.co/owkin/phikon-v2; Filiot et al., arXiv 2409.09173), 224×224 tiles at 20x
(0.5 µm/px), ImageNet mean/std, no registers (paper's Extended Table 5 as summarised in wsistream's Phikon
recipe), embedding = CLS of `last_hidden_state` (1024-d; card, Trident Phikonv2InferenceEncoder, LazySlide),
Owkin non-commercial licence (LICENSE.pdf in the repo), not gated. Parameters: model.safetensors is 1.21 GB of
float32 in the repo listing, i.e. 302-304M parameters, which is ViT-L/16 at 224 px (303M, as UNI); the "307M"
quoted by third parties is the generic ViT-L figure with a classifier head.
"""

from __future__ import annotations

import re
from functools import partial

from ..preset import IMAGENET_MEAN, IMAGENET_STD, Preset, register_preset

_BLOCK = re.compile(r"^(?:encoder\.layers?|layers)\.(\d+)\.(.+)\.(weight|bias|lambda1)$")
# per-block module names (transformers, as saved) → timm
_RENAME = {
    "layernorm_before": "norm1", "norm1": "norm1",
    "layernorm_after": "norm2", "norm2": "norm2",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1", "mlp.fc1": "mlp.fc1", "mlp.weights_in": "mlp.fc1",
    "output.dense": "mlp.fc2", "mlp.fc2": "mlp.fc2", "mlp.weights_out": "mlp.fc2", "mlp.down_proj": "mlp.fc2",
}
_LAYER_SCALE = {"layer_scale1": "ls1", "layer_scale2": "ls2"}
# pieces concatenated along the output dimension: attention q | k | v, and transformers-5's SwiGLU gate | up
_CONCAT = {
    "attention.attention.query": ("attn.qkv", 0, 3), "attention.attention.key": ("attn.qkv", 1, 3),
    "attention.attention.value": ("attn.qkv", 2, 3),
    "attention.q_proj": ("attn.qkv", 0, 3), "attention.k_proj": ("attn.qkv", 1, 3),
    "attention.v_proj": ("attn.qkv", 2, 3),
    "mlp.gate_proj": ("mlp.fc1", 0, 2), "mlp.up_proj": ("mlp.fc1", 1, 2),
}
_MODEL_PREFIXES = ("vit.", "dinov2.", "dinov2_with_registers.")


def resample_patch_pos(pos, grid: int):
    """(1, S*S, C) patch position embeddings → (1, grid*grid, C), as transformers' ViT/DINOv2
    `interpolate_pos_encoding` does for a grid×grid input: float32 bicubic, align_corners=False, no
    antialias, back to the input dtype. Unchanged when S == grid (transformers does not interpolate then)."""
    import math

    import torch.nn.functional as F  # noqa: N812

    n, c = pos.shape[1], pos.shape[2]
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"position embeddings for {n} patches are not a square grid")
    if side == grid:
        return pos
    x = pos.reshape(1, side, side, c).permute(0, 3, 1, 2)
    x = F.interpolate(x.float(), size=(grid, grid), mode="bicubic", align_corners=False).to(pos.dtype)
    return x.permute(0, 2, 3, 1).reshape(1, grid * grid, c)


def hf_vit_to_timm(state: dict, *, grid: int, fold_cls_pos: bool = False) -> dict:
    """A transformers ViT / DINOv2 (with or without registers) state dict under timm VisionTransformer's keys
    (the map in this module's docstring). `grid` is the preset's patch grid (input_size // patch_size);
    `fold_cls_pos` for timm models built with `no_embed_class` (register models). Works on `meta` tensors
    (key and shape checks on the driver read no data)."""
    import torch

    keys = list(state)
    for prefix in _MODEL_PREFIXES:  # a ...ForImageClassification checkpoint: the backbone under a prefix
        if not any(k.startswith("embeddings.") for k in keys) and any(k.startswith(prefix + "embeddings.")
                                                                     for k in keys):
            state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
            break
    out: dict = {}
    pieces: dict[tuple[int, str, str], dict[int, tuple[str, object]]] = {}
    pos = state.get("embeddings.position_embeddings")
    for key, value in state.items():
        if key == "embeddings.cls_token":
            out["cls_token"] = value + pos[:, :1] if fold_cls_pos and pos is not None else value
        elif key == "embeddings.position_embeddings":
            patches = resample_patch_pos(value[:, 1:], grid)
            out["pos_embed"] = patches if fold_cls_pos else torch.cat([value[:, :1], patches], dim=1)
        elif key == "embeddings.register_tokens":
            out["reg_token"] = value
        elif key == "embeddings.mask_token":
            continue
        elif key.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("layernorm."):
            out["norm." + key.rsplit(".", 1)[1]] = value
        elif (m := _BLOCK.match(key)) is not None:
            i, module, param = int(m.group(1)), m.group(2), m.group(3)
            if module in _RENAME and param != "lambda1":
                out[f"blocks.{i}.{_RENAME[module]}.{param}"] = value
            elif module in _LAYER_SCALE and param == "lambda1":
                out[f"blocks.{i}.{_LAYER_SCALE[module]}.gamma"] = value
            elif module in _CONCAT and param != "lambda1":
                target, index, count = _CONCAT[module]
                pieces.setdefault((i, target, param), {})[index] = (key, value)
            else:
                out[key] = value
        else:
            out[key] = value  # pooler.*, or a key the strict check will name
    for (i, target, param), parts in pieces.items():
        count = 3 if target == "attn.qkv" else 2
        if len(parts) == count:
            out[f"blocks.{i}.{target}.{param}"] = torch.cat([parts[j][1] for j in range(count)], dim=0)
        else:  # incomplete: leave the original names for the strict check to report
            out.update(dict(parts.values()))
    return out


def dinov2_swiglu_hidden(dim: int, mlp_ratio: float = 4) -> int:
    """Hidden width of transformers' / DINOv2's SwiGLU FFN: two thirds of dim*mlp_ratio, rounded up to a
    multiple of 8 (768 → 2048, 1024 → 2736, 1536 → 4096)."""
    return (int(int(dim * mlp_ratio) * 2 / 3) + 7) // 8 * 8


def swiglu_kwargs(dim: int) -> dict:
    """timm kwargs for DINOv2's SwiGLU FFN: SwiGLUPacked (fc1 → [gate | up], silu(gate) * up, fc2), whose fc1
    width is int(dim * mlp_ratio) = 2 * hidden (the +0.5 makes int() land there whatever the float rounding)."""
    import timm.layers
    import torch

    return dict(mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU,
                mlp_ratio=(2 * dinov2_swiglu_hidden(dim) + 0.5) / dim)


def _phikon_v2_kwargs(embed_dim: int = 1024, depth: int = 24, num_heads: int = 16) -> dict:
    # DINOv2 blocks carry LayerScale: init_values creates ls1/ls2 (the checkpoint's gammas replace the value)
    return dict(img_size=224, patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                init_values=1e-5)


register_preset(Preset(
    name="phikon", family="Phikon", hf_repo="owkin/phikon", arch="vit_base_patch16_224", dim=768,
    tile_size=224, mpp=0.5, licence="Owkin non-commercial", gated=False, params_m=85.8,
    kwargs=lambda: dict(img_size=224, patch_size=16),
    mean=IMAGENET_MEAN, std=IMAGENET_STD, output="cls",
    weight_files=("model.safetensors", "pytorch_model.bin"), head=("pooler",),
    remap=partial(hf_vit_to_timm, grid=14),
    sources=("https://huggingface.co/owkin/phikon", "https://huggingface.co/owkin/phikon/discussions/1",
             "https://huggingface.co/1aurent/vit_base_patch16_224.owkin_pancancer",
             "Filiot et al., medRxiv 2023.07.21.23292757"),
    notes="transformers ViTModel checkpoint remapped into timm (see encoders/foundation/phikon.py)",
))

register_preset(Preset(
    name="phikon-v2", family="Phikon", hf_repo="owkin/phikon-v2", arch="vit_large_patch16_224", dim=1024,
    tile_size=224, mpp=0.5, licence="Owkin non-commercial", gated=False, params_m=303,
    kwargs=_phikon_v2_kwargs, mean=IMAGENET_MEAN, std=IMAGENET_STD, output="cls",
    weight_files=("model.safetensors",), remap=partial(hf_vit_to_timm, grid=14),
    sources=("https://huggingface.co/owkin/phikon-v2", "Filiot et al., arXiv 2409.09173",
             "https://ramonkaspar.github.io/wsistream/recipes/phikon/"),
    notes="transformers Dinov2Model checkpoint remapped into timm; params from the 1.21 GB float32 file",
))
