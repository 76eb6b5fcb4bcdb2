"""Kaiko.ai's first pathology FMs ("Towards large-scale training of pathology foundation models"): DINO ViT-S/16,
ViT-S/8, ViT-B/16, ViT-B/8 and DINOv2 ViT-L/14 (4 registers), trained on TCGA.

Sources (each fact below is from these; gaps are noted):
- kaiko.ai et al., arXiv:2404.15217, and https://github.com/kaiko-ai/towards_large_pathology_fms: README
  (the five models; preprocessing Resize(224), CenterCrop(224), Normalize(mean=(0.5, 0.5, 0.5),
  std=(0.5, 0.5, 0.5)); `features = model(image)` with shape (1, 384) for ViT-S/16, i.e. the class token) and
  hubconf.py (release 0.0.1): `timm.create_model("vit_small_patch16_224" | "vit_small_patch8_224" |
  "vit_base_patch16_224" | "vit_base_patch8_224", dynamic_img_size=True, num_classes=0)` loaded strictly from
  GitHub release files vits16.pth / vits8.pth / vitb16.pth / vitb8.pth, and `timm.create_model(
  "vit_large_patch14_reg4_dinov2")` (timm default img_size 518) loaded from vitl14.pth after timm's
  `_convert_dinov2` (the release file is in DINOv2's own key layout). Licence: "Kaiko Non-Commercial Public
  License", Version 1 (LICENSE in that repo). Not gated.
- The weights are not on a kaiko-ai Hugging Face repo; timm-format mirrors are the 1aurent collection
  https://huggingface.co/collections/1aurent/kaikoai-models-66636c99d8e1e34bc6dcf795 (model.safetensors,
  licence tag kaiko-non-commercial): 1aurent/vit_small_patch16_224.kaiko_ai_towards_large_pathology_fms, ...,
  1aurent/vit_large_patch14_reg4_224.kaiko_ai_towards_large_pathology_fms (whose card loads it with
  dynamic_img_size=True and the same 224 px / 0.5 mean-std preprocessing). Trident loads these mirrors
  (`--patch_size 256 --mag 20`, building ViT-L/14 at img_size 518 and feeding 224 px); eva registers the same
  five as pathology/kaiko_vit{s16,s8,b16,b8,l14} through torch.hub with dynamic_img_size=True and the class
  token by default (the class token concatenated with the mean patch token is an option, not the default).
- Parameter counts: not stated by kaiko; the figures are the timm model cards of the identical architectures
  (https://huggingface.co/timm/vit_small_patch16_224.dino and .../vit_small_patch8_224.dino: 21.7M;
  .../vit_base_patch8_224.dino: 85.8M, vit_base_patch16_224 the same width and depth; and
  .../vit_large_patch14_reg4_dinov2.lvd142m: 304.4M at 518 px).

Native geometry: the paper trains on patches sampled at several magnifications and publishes no single tile
size; 224 px at 0.5 µm/px is registered (Trident uses 256 px at 20x, which the Resize(224) above brings to 224).
The ViT-L/14 is built at img_size 518, the release's 37 x 37 patch position table (timm's no_embed_class: the
class and register tokens take no position), and with dynamic_img_size=True interpolates it to the 16 x 16 grid
of a 224 px input, as hubconf, eva and Trident run it. The 1aurent ViT-L/14 mirror (renamed from
vit_large_patch14_reg4_dinov2.* to vit_large_patch14_reg4_224.*) is 1.22 GB, i.e. ~304.4M float32 values: the
518 px table; a 16 x 16 table would fail the strict load as a mis-shaped pos_embed (not checked on the file).
"""

from __future__ import annotations

from ..preset import Preset, register_preset

KAIKO_MEAN = (0.5, 0.5, 0.5)
KAIKO_STD = (0.5, 0.5, 0.5)
_SOURCES = ("arXiv:2404.15217", "https://github.com/kaiko-ai/towards_large_pathology_fms",
            "https://huggingface.co/collections/1aurent/kaikoai-models-66636c99d8e1e34bc6dcf795")


def dinov2_to_timm(state: dict) -> dict:
    """A DINOv2-layout ViT-L/14-reg4 state dict (kaiko's vitl14.pth release) in timm's layout, as timm's own
    `_convert_dinov2` does; a state dict already in timm's layout (the 1aurent mirror) is returned unchanged."""
    state = dict(state)
    state.pop("mask_token", None)
    if "register_tokens" in state:
        # timm's no_embed_class ViT: neither the class nor the register tokens take a position embedding, so the
        # class token's position is folded into it and the position table keeps the patch positions only.
        state["reg_token"] = state.pop("register_tokens")
        state["cls_token"] = state["cls_token"] + state["pos_embed"][:, 0]
        state["pos_embed"] = state["pos_embed"][:, 1:]
    return state


def _register(name: str, arch: str, hub: str, dim: int, params_m: float, card: str, **kwargs) -> None:
    register_preset(Preset(
        name=name, family="Kaiko", hf_repo=f"1aurent/{hub}.kaiko_ai_towards_large_pathology_fms", arch=arch,
        dim=dim, tile_size=224, mpp=0.5, licence="Kaiko Non-Commercial Public License v1", gated=False,
        params_m=params_m, kwargs=lambda: dict(kwargs, dynamic_img_size=True), mean=KAIKO_MEAN, std=KAIKO_STD,
        output="cls", weight_files=("model.safetensors",), sources=(*_SOURCES, card),
        remap=dinov2_to_timm if "reg4" in arch else None,
        notes=f"official weights: GitHub release {name.removeprefix('kaiko-')}.pth; HF: 1aurent timm mirror; "
              "parameter count from the timm card of the same architecture",
    ))


_register("kaiko-vits16", "vit_small_patch16_224", "vit_small_patch16_224", 384, 21.7,
          "https://huggingface.co/timm/vit_small_patch16_224.dino")
_register("kaiko-vits8", "vit_small_patch8_224", "vit_small_patch8_224", 384, 21.7,
          "https://huggingface.co/timm/vit_small_patch8_224.dino")
_register("kaiko-vitb16", "vit_base_patch16_224", "vit_base_patch16_224", 768, 85.8,
          "https://huggingface.co/timm/vit_base_patch16_224.dino")
_register("kaiko-vitb8", "vit_base_patch8_224", "vit_base_patch8_224", 768, 85.8,
          "https://huggingface.co/timm/vit_base_patch8_224.dino")
_register("kaiko-vitl14", "vit_large_patch14_reg4_dinov2", "vit_large_patch14_reg4_224", 1024, 304.4,
          "https://huggingface.co/timm/vit_large_patch14_reg4_dinov2.lvd142m", img_size=518)
