"""The attention paper's slide augmentation, applied to the grid instead of re-encoding the slide.

papers/attention-gigapixel-classifier.txt §III.A: each training WSI gets 9 transformations (one horizontal flip,
one vertical flip, three clockwise rotations of 90°, two horizontal and two vertical translations) and the
training set also holds every WSI at 4 µm/px. On a grid of embeddings these become: flips and rotations of the
cell arrangement (the tiles' own pixels are not rotated: a grid-level shortcut, exact only for rotation-invariant
encoders), translations by whole cells (the tissue moves `shift` cells inside a frame of the same size, the cells
pushed out are dropped, as the paper's shifted WSI crops its box), and the 4 µm/px copy as 2x2 pooling of kept
cells (the mean embedding of a 2x2 block stands for the embedding of the 4x larger tile).
"""

from __future__ import annotations

import numpy as np

# Index 0 is the slide as encoded; 1..9 are the paper's 9 transformations.
SLIDE_TRANSFORMS = ("identity", "flip-h", "flip-v", "rot90", "rot180", "rot270", "shift-left", "shift-right", "shift-up",
              "shift-down")


def _shift(a: np.ndarray, cells: int, axis: int) -> np.ndarray:
    """Translate along `axis` by `cells` (negative: towards index 0); vacated cells are zero / False."""
    out = np.zeros_like(a)
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    if cells >= 0:
        src[axis], dst[axis] = slice(0, a.shape[axis] - cells), slice(cells, None)
    else:
        src[axis], dst[axis] = slice(-cells, None), slice(0, a.shape[axis] + cells)
    out[tuple(dst)] = a[tuple(src)]
    return out


def transform_grid(dense: np.ndarray, mask: np.ndarray, index: int, shift: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Transformation `index` (0..9, see SLIDE_TRANSFORMS) of a (C, H, W) grid and its (H, W) mask."""
    name = SLIDE_TRANSFORMS[index]
    if name == "identity":
        return dense, mask
    if name.startswith("flip"):
        axis = -1 if name == "flip-h" else -2
        return np.flip(dense, axis), np.flip(mask, axis)
    if name.startswith("rot"):
        k = -int(name[3:]) // 90  # clockwise: numpy's rot90 turns counter-clockwise for positive k
        return np.rot90(dense, k, axes=(-2, -1)), np.rot90(mask, k, axes=(-2, -1))
    step = -shift if name in ("shift-left", "shift-up") else shift
    axis = -1 if name in ("shift-left", "shift-right") else -2
    return _shift(dense, step, axis), _shift(mask, step, axis)


def pool_2x2(dense: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The grid at half the resolution (2 µm/px -> 4 µm/px): each 2x2 block's kept cells averaged, (C, ceil(H/2),
    ceil(W/2)); a block with no kept cell stays empty."""
    c, h, w = dense.shape
    hp, wp = h + h % 2, w + w % 2
    d = np.zeros((c, hp, wp), np.float32)
    m = np.zeros((hp, wp), np.float32)
    d[:, :h, :w] = dense * mask
    m[:h, :w] = mask
    sums = d.reshape(c, hp // 2, 2, wp // 2, 2).sum((2, 4))
    counts = m.reshape(hp // 2, 2, wp // 2, 2).sum((1, 3))
    return sums / np.maximum(counts, 1), counts > 0


def paper_augment(dense: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One draw from the paper's augmented training set: the slide or one of its 9 transformations, at 2 or
    4 µm/px, uniformly (§III.A)."""
    dense, mask = transform_grid(dense, mask, int(rng.integers(len(SLIDE_TRANSFORMS))))
    if rng.random() < 0.5:
        dense, mask = pool_2x2(dense, mask)
    return dense, mask
