"""Midnight-12k (kaiko.ai): DINOv2 ViT-g/14 trained on TCGA (12k WSIs), embedding = CLS ⊕ mean patch token.

The weights ship as a transformers `Dinov2Model` checkpoint (`AutoModel.from_pretrained("kaiko-ai/midnight")`
on the card, no remote code); `phikon.hf_vit_to_timm` maps it into timm's `vit_giant_patch14_dinov2`
(why a key map rather than transformers, in phikon.py).

Sources. Model card https://huggingface.co/kaiko-ai/midnight: base_model facebook/dinov2-giant; "trained on
224x224 images normalized with a mean of (0.5, 0.5, 0.5) and a standard deviation of (0.5, 0.5, 0.5)"; the
card's `extract_classification_embedding` concatenates the CLS token with the mean of the patch tokens
(`tensor[:, 0, :]`, `tensor[:, 1:, :].mean(1)`: no register tokens), 3072-d; Midnight-12k weights "publicly
available under the permissive MIT license" (not gated). facebook/dinov2-giant config
(https://huggingface.co/facebook/dinov2-giant/blob/main/config.json): hidden 1536, 40 layers, 24 heads,
patch 14, use_swiglu_ffn, layerscale, layer_norm_eps 1e-6, image_size 518. Karasikov et al., "Training
state-of-the-art pathology foundation models with orders of magnitude less data", MICCAI 2025 / arXiv
2504.05186 (https://github.com/kaiko-ai/midnight): ViT-g/14, 1.1B parameters, initialised from DINOv2.
Geometry: trained on tiles at 0.25-2 µm/px (several magnifications, per the paper); the preset's default is
224 px at 0.5 µm/px (20x), as Trident runs it (`--patch_encoder midnight12k --patch_size 224 --mag 20`).

Position embeddings: the checkpoint's grid follows its config (518 px → 37×37 when inherited from
dinov2-giant; LazySlide's 1.14B parameter count for the checkpoint matches that grid). transformers resamples
it to 16×16 at every 224 px forward (float32 bicubic, no antialias); the remap does the same resampling once,
at load, so the timm module (224 px, 16×16) gives the transformers model's output exactly, and timm's
own dynamic resampling (antialiased, hence different) is never used. The module therefore has 1.135B
parameters (the 37×37 table is 1.7M more).
"""

from __future__ import annotations

from functools import partial

from ..preset import Preset, register_preset
from .phikon import hf_vit_to_timm, swiglu_kwargs

KAIKO_MEAN = (0.5, 0.5, 0.5)
KAIKO_STD = (0.5, 0.5, 0.5)


def midnight_kwargs(embed_dim: int = 1536, depth: int = 40, num_heads: int = 24) -> dict:
    """timm kwargs of the Midnight network (the tests build a narrow one with the same options)."""
    return dict(img_size=224, patch_size=14, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                init_values=1e-5, **swiglu_kwargs(embed_dim))


register_preset(Preset(
    name="midnight-12k", family="Midnight", hf_repo="kaiko-ai/midnight", arch="vit_giant_patch14_dinov2",
    dim=3072, tile_size=224, mpp=0.5, licence="MIT", gated=False, params_m=1100,
    kwargs=midnight_kwargs, mean=KAIKO_MEAN, std=KAIKO_STD, output="cls+mean",
    weight_files=("model.safetensors",), remap=partial(hf_vit_to_timm, grid=16),
    sources=("https://huggingface.co/kaiko-ai/midnight", "https://github.com/kaiko-ai/midnight",
             "https://huggingface.co/facebook/dinov2-giant/blob/main/config.json",
             "Karasikov et al., MICCAI 2025, arXiv 2504.05186"),
    notes="transformers Dinov2Model checkpoint remapped into timm; pos embed resampled to 16x16 at load",
))
