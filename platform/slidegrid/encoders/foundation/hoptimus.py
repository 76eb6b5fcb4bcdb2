"""H-optimus-0, H-optimus-1 and H0-mini (Bioptimus): DINOv2-style ViTs with 4 register tokens and SwiGLU.

Sources (each fact below is from these; disagreements and gaps are noted):
- H-optimus-0 model card https://huggingface.co/bioptimus/H-optimus-0: "a 1.1B parameter vision transformer
  trained on ... more than 500,000 H&E stained whole slide histology images"; "expects images of size 224x224
  that were extracted at 0.5 microns per pixel"; `timm.create_model("hf-hub:bioptimus/H-optimus-0",
  pretrained=True, init_values=1e-5, dynamic_img_size=False)`; transform ToTensor + Normalize(mean=(0.707223,
  0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517)) (no resize); the features are the model's output
  (1 x 1536), i.e. the class token (config.json: architecture vit_giant_patch14_reg4_dinov2, global_pool
  "token", num_features 1536, input_size 224, the same mean/std). Licence Apache-2.0. Weights:
  pytorch_model.bin (4.54 GB) in the repo tree.
- H-optimus-1 model card https://huggingface.co/bioptimus/H-optimus-1: same architecture, usage and
  normalisation as H-optimus-0 (1.1B parameters, 224 px at 0.5 µm/px); "released under the CC-BY-NC-ND 4.0
  license", gated (institutional e-mail, access request). Trident loads pytorch_model.bin; another peer
  (DeepSpotM) model.safetensors: both names are accepted.
- H0-mini model card https://huggingface.co/bioptimus/H0-mini and Filiot et al., "Distilling foundation models
  for robust and efficient models in digital pathology", arXiv:2501.16239 (MICCAI 2025): a ViT-B/14 distilled
  from H-optimus-0; the card loads `timm.create_model("hf-hub:bioptimus/H0-mini", pretrained=True,
  mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU)`, gets output (1, 261, 768) (1 class + 4
  register + 256 patch tokens), and concatenates the class token with the mean of
  `output[:, model.num_prefix_tokens:]` -> (1, 1536): the output used here is that concatenation ("cls+mean",
  1536-d; the class token alone is 768-d). Gated, CC-BY-NC-ND-4.0 (LazySlide registry). The card's transform
  comes from the repo's pretrained_cfg; slide2vec, LazySlide and DeepSpotM all use the H-optimus mean/std above
  for it, which is what is registered (the config.json itself was not found in the stored sources).
  Architecture kwargs (vit_base_patch14_reg4_dinov2, mlp_ratio 5.33334, reg_tokens 4, init_values 1e-5,
  img_size 224, global_pool "") are from DeepSpotM's copy of the repo config (not the card); they are
  consistent with LazySlide's stated 85.7M parameters (timm's default mlp_ratio 4 would give 71.6M).
  Weights: model.safetensors (the repo is tagged Safetensors).
- Peers: Trident `trident/patch_encoder_models/load.py` (HOptimus0/1: vit_giant_patch14_reg4_dinov2,
  init_values 1e-5, global_pool "token", the mean/std above; H0Mini: cls or cls+mean via num_prefix_tokens),
  slide2vec `slide2vec/encoders/models/hoptimus.py` (H-optimus-0/1: 1536-d; H0-mini default cls+mean 1536-d,
  0.5 µm/px, 224 px), LazySlide `models/vision/h_optimus.py` (param_size 1.13B for H-optimus-0/1, 85.7M for
  H0-mini; H-optimus-0 not gated, H-optimus-1 and H0-mini gated), eva `backbones/pathology/bioptimus.py`.

Uncertain: whether H-optimus-0 is gated today (the card's example calls `login()`; LazySlide lists it as not
gated) -- registered as not gated. Parameter counts: the cards' "1.1B" is registered (LazySlide says 1.13B; the
architecture counts 1134.8M, within both roundings).
"""

from __future__ import annotations

from ..preset import Preset, register_preset

HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)


def _hoptimus_kwargs() -> dict:
    # timm's vit_giant_patch14_reg4_dinov2 already is patch 14, embed 1536, depth 40, 24 heads, LayerScale 1e-5,
    # SwiGLUPacked + SiLU with mlp_ratio 2.66667 * 2, reg_tokens 4, no_embed_class; img_size must be 224 (the
    # timm default is 518, which would give a 37x37 position embedding the checkpoint does not have).
    return dict(img_size=224, init_values=1e-5, dynamic_img_size=False)


def _h0_mini_kwargs() -> dict:
    import timm.layers
    import torch

    return dict(img_size=224, init_values=1e-5, mlp_ratio=5.33334, reg_tokens=4, global_pool="",
                dynamic_img_size=True, mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU)


register_preset(Preset(
    name="h-optimus-0", family="H-optimus", hf_repo="bioptimus/H-optimus-0", arch="vit_giant_patch14_reg4_dinov2",
    dim=1536, tile_size=224, mpp=0.5, licence="Apache-2.0", gated=False, params_m=1100, kwargs=_hoptimus_kwargs,
    mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD, output="cls",
    weight_files=("pytorch_model.bin", "model.safetensors"),
    sources=("https://huggingface.co/bioptimus/H-optimus-0", "https://github.com/bioptimus/releases"),
    notes="card: 1.1B parameters (LazySlide: 1.13B); gating status uncertain (card example calls login())",
))

register_preset(Preset(
    name="h-optimus-1", family="H-optimus", hf_repo="bioptimus/H-optimus-1", arch="vit_giant_patch14_reg4_dinov2",
    dim=1536, tile_size=224, mpp=0.5, licence="CC-BY-NC-ND-4.0", gated=True, params_m=1100,
    kwargs=_hoptimus_kwargs, mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD, output="cls",
    weight_files=("pytorch_model.bin", "model.safetensors"),
    sources=("https://huggingface.co/bioptimus/H-optimus-1",),
    notes="card: 1.1B parameters (LazySlide: 1.13B)",
))

register_preset(Preset(
    name="h0-mini", family="H-optimus", hf_repo="bioptimus/H0-mini", arch="vit_base_patch14_reg4_dinov2",
    dim=1536, tile_size=224, mpp=0.5, licence="CC-BY-NC-ND-4.0", gated=True, params_m=85.7, kwargs=_h0_mini_kwargs,
    mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD, output="cls+mean",
    weight_files=("model.safetensors", "pytorch_model.bin"),
    sources=("https://huggingface.co/bioptimus/H0-mini", "Filiot et al., arXiv:2501.16239",
             "LazySlide registry (param_size 85.7M)"),
    notes="embedding = class token (768) + mean of the 256 patch tokens (768), registers excluded, as on the card; "
          "mean/std and mlp_ratio from peers' copies of the repo config",
))
