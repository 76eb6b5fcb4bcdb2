"""UNI and UNI2-h (Mahmood Lab): DINOv2-trained ViTs on Mass-100K / 200M+ tiles.

Sources: UNI model card https://huggingface.co/MahmoodLab/UNI ("timm.create_model('vit_large_patch16_224',
img_size=224, patch_size=16, init_values=1e-5, num_classes=0, dynamic_img_size=True)", 1024-d CLS output, 20x
tiles, ImageNet mean/std, CC-BY-NC-ND-4.0, gated); Chen et al., "Towards a general-purpose foundation model for
computational pathology", Nature Medicine 2024 (ViT-L/16, 303M parameters, 0.5 µm/px at 20x). UNI2-h model card
https://huggingface.co/MahmoodLab/UNI2-h (ViT-H/14 with 8 register tokens, SwiGLU MLP, embed 1536, depth 24,
heads 24, mlp_ratio 2.66667*2, init_values 1e-5, no_embed_class, 1536-d CLS output, 681M parameters,
CC-BY-NC-ND-4.0, gated).
"""

from __future__ import annotations

from ..preset import Preset, register_preset


def _uni2_kwargs() -> dict:
    import timm.layers
    import torch

    return dict(img_size=224, patch_size=14, depth=24, num_heads=24, init_values=1e-5, embed_dim=1536,
                mlp_ratio=2.66667 * 2, no_embed_class=True, mlp_layer=timm.layers.SwiGLUPacked,
                act_layer=torch.nn.SiLU, reg_tokens=8, dynamic_img_size=True)


register_preset(Preset(
    name="uni", family="UNI", hf_repo="MahmoodLab/UNI", arch="vit_large_patch16_224", dim=1024,
    tile_size=224, mpp=0.5, licence="CC-BY-NC-ND-4.0", gated=True, params_m=303,
    kwargs=lambda: dict(img_size=224, patch_size=16, init_values=1e-5, dynamic_img_size=True),
    weight_files=("pytorch_model.bin",),
    sources=("https://huggingface.co/MahmoodLab/UNI", "Chen et al., Nature Medicine 2024"),
))

register_preset(Preset(
    name="uni2-h", family="UNI", hf_repo="MahmoodLab/UNI2-h", arch="vit_giant_patch14_224", dim=1536,
    tile_size=224, mpp=0.5, licence="CC-BY-NC-ND-4.0", gated=True, params_m=681, kwargs=_uni2_kwargs,
    weight_files=("pytorch_model.bin",),
    sources=("https://huggingface.co/MahmoodLab/UNI2-h",),
))
