"""Hibou-B and Hibou-L (HistAI): DINOv2 ViTs with 4 register tokens, SwiGLU FFN and LayerScale.

The repos ship a transformers checkpoint for a custom `Dinov2ModelWithRegisters` that the card loads with
`trust_remote_code=True`. That code is never run here: the checkpoint's keys are transformers' DINOv2
layout plus `embeddings.register_tokens`, which `phikon.hf_vit_to_timm` maps into a timm VisionTransformer
(`reg_tokens=4`, `no_embed_class`, the CLS position folded into the CLS token; why a key map, in
phikon.py). Tested against transformers' own Dinov2WithRegistersModel, which has the same layout and forward
(CLS, registers after the position embedding, patches).

Sources. Hibou-B config.json (https://huggingface.co/histai/hibou-b/blob/main/config.json): hidden_size 768,
12 layers, 12 heads, patch_size 14, image_size 224, num_register_tokens 4, use_swiglu_ffn true, mlp_ratio 4,
layerscale, layer_norm_eps 1e-6; model.safetensors 343 MB (85.7M parameters, float32). Card
(https://huggingface.co/histai/hibou-b): "Foundational Vision Transformer for digital pathology pretrained on
a private dataset using DINOv2 framework", Apache-2.0, not gated. Hibou-L (https://huggingface.co/histai/hibou-L):
Apache-2.0, gated (accept the conditions / share contact information), "Safetensors Model size 304M params";
ViT-L/14 (1024-d, 24 layers, 16 heads; HistAI/hibou `vision_transformer.vit_large`). Its config is behind the
gate: SwiGLU and registers are taken from Hibou-B's config (same framework, same custom code), and the 304M
figure agrees (with SwiGLU the network is 303.7M, with a plain MLP 303.2M). Nechaev et al., "Hibou: A Family
of Foundational Vision Transformers for Pathology", arXiv 2406.05074. Preprocessing (preprocessor_config, as
used by LazySlide's and STAMP's Hibou encoders): 224 px, bicubic resize, mean (0.7068, 0.5755, 0.722), std
(0.195, 0.2316, 0.1816). Embedding: the card's `pooler_output` = the CLS token after the final LayerNorm
(768 / 1024-d). Geometry: 224 px tiles at 20x, 0.5 µm/px, as Trident runs Hibou-L (README: `--patch_encoder
hibou_l --patch_size 224 --mag 20`); the paper does not state a magnification.
"""

from __future__ import annotations

from functools import partial

from ..preset import Preset, register_preset
from .phikon import hf_vit_to_timm, swiglu_kwargs

HIBOU_MEAN = (0.7068, 0.5755, 0.722)
HIBOU_STD = (0.195, 0.2316, 0.1816)


def hibou_kwargs(embed_dim: int, depth: int, num_heads: int) -> dict:
    """timm kwargs of a Hibou network (the tests build a narrow one with the same options)."""
    return dict(img_size=224, patch_size=14, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                init_values=1e-5, reg_tokens=4, no_embed_class=True, **swiglu_kwargs(embed_dim))


_REMAP = partial(hf_vit_to_timm, grid=16, fold_cls_pos=True)

register_preset(Preset(
    name="hibou-b", family="Hibou", hf_repo="histai/hibou-b", arch="vit_base_patch14_reg4_dinov2", dim=768,
    tile_size=224, mpp=0.5, licence="Apache-2.0", gated=False, params_m=85.7,
    kwargs=partial(hibou_kwargs, 768, 12, 12), mean=HIBOU_MEAN, std=HIBOU_STD, output="cls",
    weight_files=("model.safetensors",), remap=_REMAP,
    sources=("https://huggingface.co/histai/hibou-b", "https://huggingface.co/histai/hibou-b/blob/main/config.json",
             "Nechaev et al., arXiv 2406.05074"),
    notes="transformers DINOv2-with-registers checkpoint remapped into timm; no trust_remote_code",
))

register_preset(Preset(
    name="hibou-l", family="Hibou", hf_repo="histai/hibou-L", arch="vit_large_patch14_reg4_dinov2", dim=1024,
    tile_size=224, mpp=0.5, licence="Apache-2.0", gated=True, params_m=304,
    kwargs=partial(hibou_kwargs, 1024, 24, 16), mean=HIBOU_MEAN, std=HIBOU_STD, output="cls",
    weight_files=("model.safetensors",), remap=_REMAP,
    sources=("https://huggingface.co/histai/hibou-L", "https://github.com/HistAI/hibou",
             "Nechaev et al., arXiv 2406.05074"),
    notes="config gated: SwiGLU/registers as Hibou-B (the 304M count agrees); a mismatch fails the strict load",
))
