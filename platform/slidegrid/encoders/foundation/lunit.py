"""Lunit's DINO ViT-S/8 ("Benchmarking self-supervised learning on diverse pathology datasets").

Sources (each fact below is from these; gaps are noted):
- Kang et al., CVPR 2023, arXiv:2212.04690, and https://github.com/lunit-io/benchmark-ssl-pathology (release
  "pretrained-weights": dino_vit_small_patch8_ep200.torch). eva `backbones/pathology/lunit.py`
  (https://github.com/kaiko-ai/eva) builds it as timm `vit_small_patch8_224` from that release file and quotes
  the normalisation Lunit trained the ViT-S models with: mean [0.70322989, 0.53606487, 0.66096631], std
  [0.21716536, 0.26081574, 0.20723464]; the output is the class token (384-d; the mean patch token is an
  option, off by default).
- timm-format mirror https://huggingface.co/1aurent/vit_small_patch8_224.lunit_dino (model.safetensors, 86.7 MB;
  licence tag "lunit-non-commercial"; not gated), loaded by Trident (`lunit-vits8`, `--patch_size 224 --mag 20`)
  with dynamic_img_size=True and its pretrained_cfg transform, and by slide2vec (`lunit`, 384-d, 224 px,
  0.5 µm/px, fp32).
- Parameter count: not stated by Lunit; 21.7M is the timm model card of the identical architecture
  (https://huggingface.co/timm/vit_small_patch8_224.dino). ViT-S/8: patch 8, width 384, depth 12, 6 heads, no
  LayerScale, no registers.

Native geometry: the paper pretrains on 20x and 40x fields of view; 224 px at 0.5 µm/px (20x) is registered, as
Trident and slide2vec use. The Lunit release file's exact key layout was not checked; a leftover `head.*` (DINO
projection head) is allowed.
"""

from __future__ import annotations

from ..preset import Preset, register_preset

LUNIT_MEAN = (0.70322989, 0.53606487, 0.66096631)
LUNIT_STD = (0.21716536, 0.26081574, 0.20723464)

register_preset(Preset(
    name="lunit-vits8", family="Lunit", hf_repo="1aurent/vit_small_patch8_224.lunit_dino", arch="vit_small_patch8_224",
    dim=384, tile_size=224, mpp=0.5, licence="Lunit non-commercial", gated=False, params_m=21.7,
    kwargs=lambda: dict(img_size=224, dynamic_img_size=True), mean=LUNIT_MEAN, std=LUNIT_STD, output="cls",
    weight_files=("model.safetensors",), head=("head",),
    sources=("Kang et al., CVPR 2023 (arXiv:2212.04690)", "https://github.com/lunit-io/benchmark-ssl-pathology",
             "https://huggingface.co/1aurent/vit_small_patch8_224.lunit_dino",
             "https://huggingface.co/timm/vit_small_patch8_224.dino"),
    notes="official weights: dino_vit_small_patch8_ep200.torch (GitHub release); parameter count from the timm card "
          "of the same architecture",
))
