"""Virchow and Virchow2 (Paige): DINOv2-trained ViT-H/14 with a SwiGLU MLP and LayerScale.

Sources (each fact below is from these; disagreements are noted):
- Virchow model card https://huggingface.co/paige-ai/Virchow: `timm.create_model("hf-hub:paige-ai/Virchow",
  pretrained=True, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU)`; the repo's config.json gives
  `vit_huge_patch14_224` with model_args img_size=224, init_values=1e-5, mlp_ratio=5.3375, global_pool="",
  dynamic_img_size=True, and a pretrained_cfg of 224 px, crop_pct 1.0, bicubic, ImageNet mean/std (the card
  builds its transform from that cfg). Embedding: output (1 x 257 x 1280), class token `output[:, 0]`
  concatenated with the mean of the patch tokens `output[:, 1:]` -> 2560-d. Card stats: "Params (M): 632",
  image size 224 x 224. Licence: Apache-2.0, gated (extra_gated_prompt: institutional e-mail, terms of use).
  Vorontsov et al., "A foundation model for clinical-grade computational pathology and rare cancers detection",
  Nature Medicine 2024 (tiles at 0.5 µm/px, 20x).
- Virchow2 model card https://huggingface.co/paige-ai/Virchow2 (config.json as Virchow's plus reg_tokens=4,
  tag virchow_v2): output (1 x 261 x 1280); `class_token = output[:, 0]`, `patch_tokens = output[:, 5:]`
  ("tokens 1-4 are register tokens so we ignore those"), embedding = cat(class token, mean patch token) ->
  2560-d. Licence CC-BY-NC-ND-4.0, gated. Zimmermann et al., "Virchow2: Scaling self-supervised mixed
  magnification models in pathology", arXiv:2408.00738 (trained on tiles at 5x, 10x, 20x and 40x, i.e. 2.0,
  1.0, 0.5 and 0.25 µm/px; 0.5 µm/px is kept as the default here).
- Peers agree on the architecture: Trident `trident/patch_encoder_models/load.py` (VirchowInferenceEncoder /
  Virchow2InferenceEncoder: the same kwargs, `output[:, 5:]` for Virchow2, pytorch_model.bin), slide2vec
  `slide2vec/encoders/models/virchow.py` (5 prefix tokens for Virchow2), LazySlide (param_size "631.2M").

Parameter count, where sources disagree: the cards (and the Virchow paper) say 632M, the nominal ViT-H/14 size;
the architecture the same card specifies (SwiGLU hidden int(1280 * 5.3375) = 6832, LayerScale) has 631.2M,
which is LazySlide's figure and what is registered here (the card's figure is kept in `extra`).

`preset_module`'s "cls+mean" excludes `backbone.num_prefix_tokens` tokens from the mean: 1 for Virchow, 5 (class
+ 4 registers) for Virchow2, exactly the cards' `output[:, 1:]` and `output[:, 5:]`.
"""

from __future__ import annotations

from ..preset import IMAGENET_MEAN, IMAGENET_STD, Preset, register_preset

_SOURCES_V1 = ("https://huggingface.co/paige-ai/Virchow",
               "Vorontsov et al., Nature Medicine 2024 (doi:10.1038/s41591-024-03141-0)",
               "LazySlide registry (param_size 631.2M)")
_SOURCES_V2 = ("https://huggingface.co/paige-ai/Virchow2", "Zimmermann et al., arXiv:2408.00738",
               "LazySlide registry (param_size 631.2M)")


def _virchow_kwargs(reg_tokens: int = 0) -> dict:
    import timm.layers
    import torch

    kwargs = dict(img_size=224, init_values=1e-5, mlp_ratio=5.3375, global_pool="", dynamic_img_size=True,
                  mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU)
    if reg_tokens:
        kwargs["reg_tokens"] = reg_tokens
    return kwargs


register_preset(Preset(
    name="virchow", family="Virchow", hf_repo="paige-ai/Virchow", arch="vit_huge_patch14_224", dim=2560,
    tile_size=224, mpp=0.5, licence="Apache-2.0", gated=True, params_m=631.2, kwargs=_virchow_kwargs,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, output="cls+mean",
    weight_files=("model.safetensors", "pytorch_model.bin"), sources=_SOURCES_V1,
    notes="card states 632M parameters (nominal ViT-H); the card's architecture counts 631.2M",
    extra={"params_stated_by_card_m": 632},
))

register_preset(Preset(
    name="virchow2", family="Virchow", hf_repo="paige-ai/Virchow2", arch="vit_huge_patch14_224", dim=2560,
    tile_size=224, mpp=0.5, licence="CC-BY-NC-ND-4.0", gated=True, params_m=631.2,
    kwargs=lambda: _virchow_kwargs(reg_tokens=4), mean=IMAGENET_MEAN, std=IMAGENET_STD, output="cls+mean",
    weight_files=("model.safetensors", "pytorch_model.bin"), sources=_SOURCES_V2,
    notes="mixed-magnification training (2.0/1.0/0.5/0.25 µm/px); card states 632M parameters (nominal ViT-H), "
          "the card's architecture counts 631.2M",
    extra={"params_stated_by_card_m": 632, "trained_mpp": (2.0, 1.0, 0.5, 0.25)},
))
