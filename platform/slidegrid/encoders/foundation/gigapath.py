"""Prov-GigaPath tile encoder (Providence / Microsoft): a DINOv2-trained ViT-giant with 16-pixel patches.

Sources (each fact below is from these; disagreements are noted):
- Model card https://huggingface.co/prov-gigapath/prov-gigapath: tile encoder `timm.create_model(
  "hf_hub:prov-gigapath/prov-gigapath", pretrained=True)` with transform Resize(256, bicubic), CenterCrop(224),
  ToTensor, Normalize(ImageNet mean/std); output (N, 1536). The repo's config.json: architecture
  vit_giant_patch14_dinov2 with model_args img_size 224, in_chans 3, patch_size 16, embed_dim 1536, depth 40,
  num_heads 24, init_values 1e-05, mlp_ratio 5.33334, num_classes 0; global_pool "token" (the output is the
  class token after the final norm). Tile encoder weights: pytorch_model.bin (slide_encoder.pth in the same
  repo is the slide encoder, not used here). Licence: Apache-2.0 on the repo, gated behind terms restricting
  use (LazySlide: "Apache 2.0 with conditions", non-commercial).
- Xu et al., "A whole-slide foundation model for digital pathology from real-world data", Nature 2024
  (doi:10.1038/s41586-024-07441-w): 256 x 256 tiles at 0.5 µm/px (20x); the model's centre 224 crop is fed.
- Peers: Trident `trident/patch_encoder_models/load.py` (GigaPathInferenceEncoder: the kwargs above,
  "GigaPath uses a 16px patch size (overriding the patch14 timm backbone name)", Resize(256) + CenterCrop(224),
  `--patch_size 256 --mag 20`), slide2vec `slide2vec/encoders/models/gigapath.py` (same transform, 0.5 µm/px),
  LazySlide registry (param_size "1.13B", gated).

Note on the brief's "ViT-g/14": despite the timm name the released tile encoder uses patch_size=16 (config.json);
with patch 14 the checkpoint's patch embedding would not load. The MLP is timm's vit_giant_patch14_dinov2
default (SwiGLUPacked + SiLU; int(1536 * 5.33334) = 8192 packed = 2 x 4096); it is passed explicitly here so the
build does not depend on that default. Parameter count: 1.13B (LazySlide; the Nature paper's exact figure was
not found in the stored sources); the architecture counts 1134.95M.
"""

from __future__ import annotations

from ..preset import IMAGENET_MEAN, IMAGENET_STD, Preset, register_preset


def _gigapath_kwargs() -> dict:
    import timm.layers
    import torch

    return dict(img_size=224, in_chans=3, patch_size=16, embed_dim=1536, depth=40, num_heads=24, init_values=1e-5,
                mlp_ratio=5.33334, mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU)


register_preset(Preset(
    name="gigapath", family="Prov-GigaPath", hf_repo="prov-gigapath/prov-gigapath", arch="vit_giant_patch14_dinov2",
    dim=1536, tile_size=256, mpp=0.5, licence="Apache-2.0 (gated; terms restrict use)", gated=True, params_m=1130,
    kwargs=_gigapath_kwargs, input_size=224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD, output="cls",
    weight_files=("pytorch_model.bin",),
    sources=("https://huggingface.co/prov-gigapath/prov-gigapath", "Xu et al., Nature 2024",
             "LazySlide registry (param_size 1.13B)"),
    notes="tile encoder only; patch size 16 despite the timm name; 256 px tiles resized to 256 and centre-cropped "
          "to 224",
))
