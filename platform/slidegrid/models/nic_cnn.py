"""NIC's CNN on compressed grids (papers/nic-neural-image-compression.txt §3, §3.3, §4.5).

Input depth = code size C; every convolution is depthwise separable (§3, [29]); training on random R x R
crops whose centres are sampled by tissue density; 8 dihedral augmentations; at test time T crops on tissue
x 8 transforms averaged; Grad-CAM on the first convolutional layer (§3.3, Eq. 7). Layer widths and depth
follow the authors' public architecture (8 separable 3x3 layers of 128 filters, stride 2 on alternate layers,
batch norm, leaky ReLU, dense 128 + dropout): the supplementary material is not part of our copy.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..grids import dihedral


class SeparableConv(nn.Module):
    """Depthwise 3x3 + pointwise 1x1 convolution, batch norm, leaky ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pointwise(self.depthwise(x))))


class NICCNN(nn.Module):
    """Slide-level classifier/regressor on a (B, C, H, W) grid."""

    per_cell = False

    def __init__(self, in_channels: int, n_outputs: int, width: int = 128, depth: int = 8,
                 dropout: float = 0.5) -> None:
        super().__init__()
        layers, c = [], in_channels
        for i in range(depth):
            layers.append(SeparableConv(c, width, stride=2 if i % 2 else 1))
            c = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.01), nn.Dropout(dropout),
                                  nn.Linear(width, n_outputs))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, n_outputs); empty cells are zeros in x already (the mask is not needed)."""
        f = self.features(x)
        return self.head(torch.amax(f, dim=(2, 3)))


def random_crop(dense: np.ndarray, mask: np.ndarray, size: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An R x R crop whose centre is drawn by tissue density (distance to background, NIC §3)."""
    _, h, w = dense.shape
    weight = ndimage.distance_transform_edt(mask) if mask.any() else np.ones_like(mask, float)
    p = weight.ravel() / weight.sum()
    r, c = np.unravel_index(rng.choice(p.size, p=p), mask.shape)
    return _crop(dense, mask, int(r), int(c), size)


def _crop(dense: np.ndarray, mask: np.ndarray, r: int, c: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop centred at (r, c), zero-padded where it leaves the grid."""
    _, h, w = dense.shape
    out = np.zeros((dense.shape[0], size, size), dense.dtype)
    m = np.zeros((size, size), bool)
    r0, c0 = r - size // 2, c - size // 2
    sr, sc = slice(max(r0, 0), min(r0 + size, h)), slice(max(c0, 0), min(c0 + size, w))
    dr, dc = slice(sr.start - r0, sr.stop - r0), slice(sc.start - c0, sc.stop - c0)
    out[:, dr, dc] = dense[:, sr, sc]
    m[dr, dc] = mask[sr, sc]
    return out, m


def crop_centres(mask: np.ndarray, n: int) -> list[tuple[int, int]]:
    """T crop centres spread uniformly over the tissue cells (deterministic)."""
    cells = np.argwhere(mask) if mask.any() else np.argwhere(np.ones_like(mask))
    idx = np.linspace(0, len(cells) - 1, num=min(n, len(cells))).round().astype(int)
    return [tuple(int(v) for v in cells[i]) for i in idx]


def predict_tta(model: nn.Module, dense: np.ndarray, mask: np.ndarray, crop: int = 400, n_crops: int = 10,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Mean logits over T tissue crops x the 8 dihedral transforms (NIC test-time protocol)."""
    if crop >= max(dense.shape[1:]):
        crops = [dense]  # the whole grid fits in one crop: no padding, exactly dihedral-invariant
    else:
        crops = [_crop(dense, mask, r, c, crop)[0] for r, c in crop_centres(mask, n_crops)]
    batch = [np.ascontiguousarray(dihedral(x, k)) for x in crops for k in range(8)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(np.stack(batch)).float().to(device))
    model.train(was_training)
    return out.float().mean(0).cpu()


def gradcam(model: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None, target: int = -1) -> np.ndarray:
    """Grad-CAM (NIC §3.3, Eq. 7) at the first convolutional layer: (H, W) map, ReLU'd, not normalized."""
    layer = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        out.retain_grad()
        store["f"] = out

    handle = layer.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        x = x.detach().float().requires_grad_(True)
        out = model(x, mask)
        score = out[0, target] if out.dim() == 2 else out[0, target].sum()
        model.zero_grad()
        score.backward()
    finally:
        handle.remove()
        model.train(was_training)
    f, g = store["f"][0], store["f"].grad[0]
    cam = torch.relu((g.mean(dim=(1, 2))[:, None, None] * f).sum(0))
    cam = nn.functional.interpolate(cam[None, None], size=x.shape[2:], mode="bilinear", align_corners=False)
    return cam[0, 0].detach().numpy()
