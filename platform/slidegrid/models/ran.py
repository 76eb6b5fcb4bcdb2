"""Representation aggregation networks (papers/ran-representation-aggregation-networks.txt §3).

RAN-CNN (§3.1): five 3x3 convolutions, dropout after the last three, a final layer to per-cell classes.
RAN-LSTM (§3.2): stacked 2D-LSTM layers; a unit (i, j) takes the hidden and cell states of its two
predecessors in the sweep direction (Eqs. 4-9: one input gate, two forget gates, two cell candidates, one
output gate, c = i*c~ + f_x*c_x + f_y*c_y, h = o*c); four independent sweeps, one from each corner, averaged;
then a 1x1 convolution to classes. A sweep is vectorized along anti-diagonals: all cells with i + j = d are
computed in one batched step (H + W - 1 steps, not H*W).

Both are trained on 8 x 8 sub-grids (§4) and applied to a whole slide the way the paper's 2D grid moves over it
(its validation slides were processed as 2D-grids): half-overlapping windows of the trained side, averaged. For
RAN-LSTM one sweep over a whole grid would run the cell state (c = i*c~ + f_x*c_x + f_y*c_y, h = o*c: Eq. 9) far
beyond the context it was trained on, where it grows without bound (a 96 x 96 grid gave NaN); RAN-CNN would see
neighbours its 8 x 8 training inputs never had (its receptive field is 11 x 11 cells).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import ModelCard, Recipe, register_model


class SubgridModel(nn.Module):
    """A per-cell model trained on `window` x `window` sub-grids and applied to any grid in windows of that side
    every `stride` cells (default half a window), averaged (§4: the 2D-grid moved over the slide).

    `window` is a buffer, so checkpoints carry it; the trainer sets it from --subgrid."""

    per_cell = True

    def __init__(self, window: int = 8, stride: int | None = None) -> None:
        super().__init__()
        self.register_buffer("window", torch.tensor(int(window)))
        self.stride = stride

    def sweep(self, x: torch.Tensor) -> torch.Tensor:
        """Per-cell logits of one pass over the whole input (the training path on a sub-grid)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-cell logits (B, n_outputs, H, W); windowed beyond the trained sub-grid side."""
        window = int(self.window)
        if x.shape[-2] <= window and x.shape[-1] <= window:
            return self.sweep(x)
        return sliding_windows(self.sweep, x, window, self.stride or max(1, window // 2))


class RANCNN(SubgridModel):
    """Per-cell classifier: (B, C, H, W) -> (B, n_classes, H, W)."""

    def __init__(self, in_channels: int, n_outputs: int, width: int = 256, dropout: float = 0.5, window: int = 8,
                 stride: int | None = None) -> None:
        super().__init__(window, stride)
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(5):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            if i >= 2:
                layers.append(nn.Dropout2d(dropout))
            c = width
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, n_outputs, 1)

    def sweep(self, x: torch.Tensor) -> torch.Tensor:
        """Per-cell logits of the five convolutions over the whole input."""
        return self.out(self.body(x))


class Sweep2DLSTM(nn.Module):
    """One 2D-LSTM sweeping from the top-left corner (other corners: flip the input)."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        # Gates from the input p_t (U*) and from the two predecessor hidden states {h_x, h_y} (W*):
        # i, f_x, f_y, c~_x, c~_y, o.
        self.U = nn.Linear(in_channels, 6 * hidden)
        self.W = nn.Linear(2 * hidden, 6 * hidden, bias=False)

    def cell(self, p: torch.Tensor, hx: torch.Tensor, hy: torch.Tensor, cx: torch.Tensor,
             cy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eqs. 4-9 for a batch of cells (any leading shape, last dim = features)."""
        z = self.U(p) + self.W(torch.cat([hx, hy], dim=-1))
        i, fx, fy, gx, gy, o = z.chunk(6, dim=-1)
        c = torch.sigmoid(i) * 0.5 * (torch.tanh(gx) + torch.tanh(gy)) \
            + torch.sigmoid(fx) * cx + torch.sigmoid(fy) * cy
        return torch.sigmoid(o) * c, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> hidden states (B, hidden, H, W), one anti-diagonal per step."""
        b, _, h, w = x.shape
        p = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        zeros = x.new_zeros(b, 1, self.hidden)
        prev_h = prev_c = None
        prev_rows = None
        outs, rows_all, cols_all = [], [], []
        for d in range(h + w - 1):
            rows = torch.arange(max(0, d - w + 1), min(d, h - 1) + 1, device=x.device)
            cols = d - rows
            if prev_h is None:
                hx = hy = cx = cy = zeros.expand(b, len(rows), self.hidden)
            else:
                # Pad the previous diagonal with a zero state at index 0: a cell's left neighbour (i, j-1) and
                # top neighbour (i-1, j) sit on that diagonal at their row minus its first row, plus one.
                ph = torch.cat([zeros, prev_h, zeros], dim=1)
                pc = torch.cat([zeros, prev_c, zeros], dim=1)
                first = int(prev_rows[0])
                left = torch.where(cols > 0, rows - first + 1, torch.zeros_like(rows))
                top = torch.where(rows > 0, rows - first, torch.zeros_like(rows))
                hx, cx = ph[:, left], pc[:, left]
                hy, cy = ph[:, top], pc[:, top]
            hcur, ccur = self.cell(p[:, rows, cols], hx, hy, cx, cy)
            outs.append(hcur)
            rows_all.append(rows)
            cols_all.append(cols)
            prev_h, prev_c, prev_rows = hcur, ccur, rows
        out = x.new_zeros(b, h, w, self.hidden)
        out[:, torch.cat(rows_all), torch.cat(cols_all)] = torch.cat(outs, dim=1)
        return out.permute(0, 3, 1, 2)


class Layer2DLSTM(nn.Module):
    """Four sweeps, one from each corner, averaged (RAN §3.2, Fig. 3)."""

    FLIPS = ((), (3,), (2,), (2, 3))  # from top-left, top-right, bottom-left, bottom-right

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.sweeps = nn.ModuleList(Sweep2DLSTM(in_channels, hidden) for _ in self.FLIPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for sweep, dims in zip(self.sweeps, self.FLIPS):
            xi = torch.flip(x, dims) if dims else x
            yi = sweep(xi)
            outs.append(torch.flip(yi, dims) if dims else yi)
        return torch.stack(outs).mean(0)


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of side `window` every `stride` cells covering 0..n-1 (the last one flush with
    the end); [0] when n <= window."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


def sliding_windows(fn, x: torch.Tensor, window: int, stride: int, max_windows: int = 256) -> torch.Tensor:
    """fn applied to every `window` x `window` window of x (B, C, H, W) every `stride` cells, the per-cell
    outputs averaged where windows overlap: (B, K, H, W). With stride = window and H, W multiples of it, the
    result equals fn on each block. Windows go through fn in batches of `max_windows`."""
    b, _, h, w = x.shape
    wh, ww = min(window, h), min(window, w)
    boxes = [(y, x0) for y in window_starts(h, window, stride) for x0 in window_starts(w, window, stride)]
    out, count = None, x.new_zeros(1, 1, h, w)
    for k in range(0, len(boxes), max_windows):
        chunk = boxes[k:k + max_windows]
        logits = fn(torch.cat([x[:, :, y:y + wh, x0:x0 + ww] for y, x0 in chunk]))
        if out is None:
            out = x.new_zeros(b, logits.shape[1], h, w)
        for i, (y, x0) in enumerate(chunk):
            out[:, :, y:y + wh, x0:x0 + ww] += logits[i * b:(i + 1) * b]
            count[..., y:y + wh, x0:x0 + ww] += 1
    return out / count


class RANLSTM(SubgridModel):
    """Stacked 2D-LSTM layers (2 x 512 by default) and a 1x1 convolution to per-cell classes, applied in windows
    of the trained sub-grid side (SubgridModel)."""

    def __init__(self, in_channels: int, n_outputs: int, hidden: int = 512, layers: int = 2, window: int = 8,
                 stride: int | None = None) -> None:
        super().__init__(window, stride)
        self.layers = nn.ModuleList(Layer2DLSTM(in_channels if i == 0 else hidden, hidden) for i in range(layers))
        self.out = nn.Conv2d(hidden, n_outputs, 1)

    def sweep(self, x: torch.Tensor) -> torch.Tensor:
        """Per-cell logits of one pass over the whole input (the training path on a sub-grid)."""
        for layer in self.layers:
            x = layer(x)
        return self.out(x)


PAPER = "papers/ran-representation-aggregation-networks.txt"
# RAN §4 "Training Details": 28K class-balanced 8x8 2D-grids per epoch; RAN-CNN Adam, batch 64, converged after
# 4 epochs (lr not stated: Adam's default); RAN-LSTM Adam 1e-4, x0.5 every 2 epochs, batch 10, 25 epochs.
_RAN_CNN = Recipe(
    source=f"{PAPER} §4 'Model Specification', 'Training Details'",
    settings={"optimizer": "adam", "lr": 1e-3, "epochs": 4, "lr_step": 0, "batch_size": 64, "subgrid": 8,
              "samples_per_epoch": 28_000, "patience": 0},
    grid_tile=224, unstated=("lr",), notes="28K 8x8 sub-grids per epoch, Adam, batch 64, 4 epochs (§4)")
_RAN_LSTM = Recipe(
    source=f"{PAPER} §4 'Model Specification', 'Training Details'",
    settings={"optimizer": "adam", "lr": 1e-4, "epochs": 25, "lr_step": 2, "lr_gamma": 0.5, "batch_size": 10,
              "subgrid": 8, "samples_per_epoch": 28_000, "patience": 0},
    grid_tile=224, notes="28K 8x8 sub-grids per epoch, Adam 1e-4 x0.5 every 2 epochs, batch 10, 25 epochs (§4)")
for _name, _cls, _recipe in (("ran-cnn", RANCNN, _RAN_CNN), ("ran-lstm", RANLSTM, _RAN_LSTM)):
    register_model(_name, _cls, ModelCard("aggregator", f"{PAPER} §3", per_cell=True, view="subgrid",
                                          recipes={"segmentation": _recipe}))
