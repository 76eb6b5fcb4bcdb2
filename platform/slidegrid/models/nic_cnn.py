"""NIC's CNN on compressed grids (papers/nic-neural-image-compression.txt §3, §3.2, §3.3, §4.5).

Input depth = code size C; every convolution is depthwise separable (§3.2, [29]); Grad-CAM on the first
convolutional layer (§3.3, Eq. 7). Layer widths and depth follow the authors' public architecture (8 separable
3x3 layers of 128 filters, stride 2 on alternate layers, batch norm, leaky ReLU, dense 128 + dropout): the
supplementary material is not part of our copy.

§3.2, training: R x R crops (zero-padded where they leave the grid) whose centres are drawn with probability
proportional to the distance to background (cells outside the grid are background), each under one of the 8
elements of D4 drawn at random. A grid encoded with `slidegrid encode --dihedral` holds every tile's 8
encodings ("encoding each image 8 times"), and transform k of a crop is the crop of the tiles' k-th encodings
with its cell arrangement transformed by k: the slide rotated/mirrored, tiles and arrangement alike. A grid
without them gets the arrangement-only shortcut: the cells are rotated/mirrored, each tile's embedding is the
untransformed tile's (the CNN sees a slide whose tiles did not turn with it).

§3.2/§4.5, test: the mean over T crops of the same R x R (the context the CNN was trained on; the model carries
R in its `crop` buffer, so `predict` on a registered model uses it) centred on tissue cells spread over the
grid, x the same 8 transforms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..io.grids import TRANSFORMS, dihedral
from .registry import ModelCard, Recipe, register_model

if TYPE_CHECKING:
    from ..io.grids import Grid


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
    """Slide-level classifier/regressor on a (B, C, H, W) grid.

    `crop`: the side R of the crops it is trained on (§3.2; a buffer, so checkpoints and logged models carry
    it; the trainer sets it from --crop); test-time prediction (predict_tta) uses crops of that side.
    """

    per_cell = False

    def __init__(self, in_channels: int, n_outputs: int, width: int = 128, depth: int = 8,
                 dropout: float = 0.5, crop: int = 400) -> None:
        super().__init__()
        self.register_buffer("crop", torch.tensor(int(crop)))
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


def centre_weights(mask: np.ndarray) -> np.ndarray:
    """(H, W) float64 probabilities of the training-crop centres (§3.2: "proportionally to the distance to
    background"): each tissue cell's Euclidean distance, in cells, to the nearest cell without tissue, the cells
    beyond the grid's edge counting as background (so a tissue cell on the edge weighs 1, like one beside
    glass); 0 off tissue. Uniform when the mask holds no tissue."""
    if not mask.any():
        return np.full(mask.shape, 1.0 / mask.size)
    weight = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return weight / weight.sum()


def crop_centre(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """One training-crop centre (row, col) drawn from centre_weights(mask) (§3.2)."""
    p = centre_weights(mask).ravel()
    r, c = np.unravel_index(rng.choice(p.size, p=p), mask.shape)
    return int(r), int(c)


def tile_view(grid: Grid | None, dense: np.ndarray, k: int) -> np.ndarray:
    """(C, H, W): the tiles' embeddings under TRANSFORMS[k], each at its own untransformed cell. The encoded
    k-th transforms when `grid` was read with them (`slidegrid encode --dihedral`, §3.2); else `dense` itself,
    the arrangement-only shortcut (the caller then rotates the cells, never the tiles)."""
    if k == 0 or grid is None or grid.transforms is None:
        return dense
    return grid.dense(dense.dtype, transform=k)[0]


def training_crop(dense: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator,
                  grid: Grid | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One §3.2 training sample of a (C, H, W) grid and its (H, W) mask: an R x R (`size`) crop centred by
    crop_centre, under a random element k of D4, as (C, R, R) and (R, R) arrays (views; zero/False where the
    crop leaves the grid). With `grid` read with its transforms, the tiles' k-th encodings in the arrangement
    transformed by k; else the arrangement-only shortcut (tile_view)."""
    r, c = crop_centre(mask, rng)
    k = int(rng.integers(len(TRANSFORMS)))
    x, m = _crop(tile_view(grid, dense, k), mask, r, c, size)
    return dihedral(x, k), dihedral(m, k)


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


def trained_crop(model: nn.Module) -> int | None:
    """The crop side R the NIC CNN inside `model` (wrapped or not) was trained on; None without one (or for a
    model logged before the CNN carried it)."""
    net = next((m for m in model.modules() if isinstance(m, NICCNN)), None)
    crop = getattr(net, "crop", None)
    return int(crop) if crop is not None else None


def predict_tta(model: nn.Module, dense: np.ndarray, mask: np.ndarray, crop: int | None = None, n_crops: int = 10,
                device: torch.device | str = "cpu", grid: Grid | None = None) -> torch.Tensor:
    """Test-time prediction (§3.2, §4.5): mean logits (n_outputs,) over T = `n_crops` crops x the 8 elements of
    D4, on a (C, H, W) grid and its (H, W) mask.

    Every crop is R x R, zero-padded beyond the grid as in training, R = `crop` or else the side the model was
    trained on (trained_crop; 400, the paper's, for a model without one), even when the whole grid would fit:
    the CNN's global max pool has only ever seen R x R inputs with their padding. Crop centres: crop_centres.
    Transform k of a crop is as in training (training_crop): the tiles' k-th encodings when `grid` was read
    with them, else the arrangement-only shortcut. The model runs in eval mode, the T crops of one transform
    per forward pass (a batch of T x C x R x R floats, one transform's grid in memory beside `dense`).
    """
    size = crop or trained_crop(model) or 400
    centres = crop_centres(mask, n_crops)
    was_training = model.training
    model.eval()
    outs = []
    with torch.no_grad():
        for k in range(len(TRANSFORMS)):
            view = tile_view(grid, dense, k)
            crops = [_crop(view, mask, r, c, size) for r, c in centres]
            x = np.stack([dihedral(v, k) for v, _ in crops])
            m = np.stack([dihedral(mk, k) for _, mk in crops])
            # The mask as in training: a standardizing wrapper keeps padding and empty cells at exactly 0.
            outs.append(model(torch.from_numpy(x).float().to(device), torch.from_numpy(m).to(device)).float())
    model.train(was_training)
    return torch.cat(outs).mean(0).cpu()


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


PAPER = "papers/nic-neural-image-compression.txt"
# NIC §3.2 (crops R x R, 8 dihedral transforms), §4.3 (R = 400, T = 10, P = S = 128, C = 128). The optimizer
# and epochs are in the paper's supplementary material, which we do not have: ours.
_NIC = Recipe(
    source=f"{PAPER} §3.2, §4.3",
    settings={"crop": 400, "test_crops": 10, "optimizer": "adam", "lr": 1e-4, "epochs": 50, "lr_step": 0},
    grid_tile=128, unstated=("optimizer", "lr", "epochs"),
    notes="R=400 training crops, T=10 test crops x 8 dihedral transforms (§3.2, §4.3)")
register_model("nic-cnn", NICCNN, ModelCard("aggregator", f"{PAPER} §3.2", view="crop",
                                            recipes={"classification": _NIC, "regression": _NIC}))
