"""CLAM's truncated ImageNet ResNet-50 ("resnet50_trunc"): the classic 1024-d baseline of MIL pipelines.

Sources (each fact below is from these):
- Lu et al., "Data-efficient and weakly supervised computational pathology on whole-slide images", Nature
  Biomedical Engineering 2021 (CLAM), and https://github.com/mahmoodlab/CLAM: models/resnet_custom_dep.py
  (ResNet_Baseline: conv1, bn1, relu, maxpool, layer1-layer3 of ResNet-50 with torchvision's bottleneck, then
  AdaptiveAvgPool2d(1) -> 1024-d; ImageNet weights loaded from torchvision's resnet50 file with strict=False, so
  layer4 and fc are dropped) and, in current CLAM, models/builder.py `get_encoder("resnet50_trunc",
  target_img_size=224)` -> models/timm_wrapper.py TimmCNNEncoder(`resnet50.tv_in1k`, features_only=True,
  out_indices=(3,)) + AdaptiveAvgPool2d(1), with transforms Resize(224), ToTensor, Normalize(ImageNet mean/std)
  (utils/transform_utils.py, utils/constants.py); patches are 256 x 256 px at 20x (create_patches_fp.py
  defaults; the paper).
- Trident `trident/patch_encoder_models/load.py` ResNet50InferenceEncoder: the same timm model, pool, ImageNet
  normalisation, weights `pytorch_model.bin` / `model.safetensors` from https://huggingface.co/timm/resnet50.tv_in1k
  (licence bsd-3-clause, as torchvision's weights).

Weights are whatever ImageNet ResNet-50 file the user supplies (torchvision's resnet50-*.pth or timm's
resnet50.tv_in1k); nothing downloads. Both use the same key names (conv1, bn1, layer1..layer4, fc); layer4 and fc
are declared as the leftover `head`. `remap` adds BatchNorm `num_batches_tracked` counters (a step count, not a
weight) when an old torchvision file lacks them, so both old and new files load strictly.

Parameter count: no source states the truncated count; 8.54M is counted from the definition above (conv1 + bn1
+ layer1-3 of ResNet-50; the full ResNet-50 is 25.6M, torchvision docs), so it is registered as exact.
"""

from __future__ import annotations

from ..preset import IMAGENET_MEAN, IMAGENET_STD, Preset, register_preset


def _build(preset: Preset):
    """ResNet-50 up to layer3 plus global average pooling, with timm's ResNet-50 (torchvision key names)."""
    import timm
    import torch

    class TruncatedResNet50(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            full = timm.create_model("resnet50", pretrained=False, num_classes=0)
            self.conv1, self.bn1, self.act1, self.maxpool = full.conv1, full.bn1, full.act1, full.maxpool
            self.layer1, self.layer2, self.layer3 = full.layer1, full.layer2, full.layer3
            self.pool = torch.nn.AdaptiveAvgPool2d(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.pool(x).flatten(1)

    return TruncatedResNet50()


def add_batch_counters(state: dict) -> dict:
    """`num_batches_tracked` (0) for every BatchNorm whose counter the file lacks (torchvision files from before
    PyTorch 0.4.1); a file that has them is returned unchanged."""
    import torch

    out = dict(state)
    for key in state:
        if key.endswith(".running_mean"):
            counter = key[: -len("running_mean")] + "num_batches_tracked"
            out.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return out


register_preset(Preset(
    name="clam-resnet50", family="CLAM", hf_repo="timm/resnet50.tv_in1k", arch="resnet50 (to layer3) + avg pool",
    dim=1024, tile_size=256, mpp=0.5, licence="BSD-3-Clause (torchvision ImageNet weights)", gated=False,
    params_m=8.543296, params_exact=True, builder=_build, input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    output="pool", weight_files=("model.safetensors", "pytorch_model.bin"), head=("layer4", "fc"),
    remap=add_batch_counters,
    sources=("Lu et al., Nature Biomedical Engineering 2021", "https://github.com/mahmoodlab/CLAM",
             "https://huggingface.co/timm/resnet50.tv_in1k"),
    notes="ImageNet weights supplied by the user (torchvision resnet50-*.pth or timm resnet50.tv_in1k); 256 px "
          "tiles at 20x resized to 224",
))
