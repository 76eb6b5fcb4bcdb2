"""The papers' mechanics for the grid models, and learning on grids where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slidegrid import metrics
from slidegrid.grids import dihedral
from slidegrid.models import build_model
from slidegrid.models.nic_cnn import gradcam, predict_tta, random_crop
from slidegrid.models.ran import Sweep2DLSTM

torch.set_num_threads(2)


def _grids(n: int, c: int = 8, size: int = 12, seed: int = 0, blob: int = 3):
    """Noise grids; positives hold a blob of cells whose embedding is shifted (the 'tumour')."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, c, size, size)).astype(np.float32)
    y = np.arange(n) % 2
    cells = np.zeros((n, size, size), np.int64)
    for i in np.flatnonzero(y):
        r, q = rng.integers(0, size - blob, 2)
        x[i, :, r:r + blob, q:q + blob] += 2.0
        cells[i, r:r + blob, q:q + blob] = 1
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(cells)


@pytest.mark.parametrize("name", ["attention", "nic-cnn", "ran-cnn", "ran-lstm"])
@pytest.mark.parametrize("hw", [(5, 9), (13, 4)])
def test_shapes_on_odd_grids(name, hw):
    kw = {"hidden": 8} if name == "ran-lstm" else {}
    model = build_model(name, 6, 3, **kw)
    out = model(torch.randn(2, 6, *hw), torch.ones(2, *hw, dtype=torch.bool))
    assert out.shape == ((2, 3, *hw) if model.per_cell else (2, 3))


def test_attention_maps_sum_to_one_over_kept_cells_and_branches_differ():
    model = build_model("attention", 8, 2, maps=4)
    x = torch.randn(1, 8, 9, 10)
    mask = torch.ones(1, 9, 10, dtype=torch.bool)
    mask[0, :3] = False
    a = model.attention_maps(x, mask)
    assert a.shape == (1, 8, 9, 10)  # 2 branches x 4 maps
    torch.testing.assert_close(a.sum(dim=(2, 3)), torch.ones(1, 8))
    assert (a[0, :, :3] == 0).all()
    assert not torch.allclose(a[0, :4], a[0, 4:])  # max-pooled vs min-pooled attention


@pytest.mark.parametrize("variant", ["max", "average", "avgmax"])
def test_attention_variants(variant):
    model = build_model("attention", 4, 2, maps=3, variant=variant)
    assert model(torch.randn(1, 4, 6, 6)).shape == (1, 2)
    assert model.attention_maps(torch.randn(1, 4, 6, 6)).shape[1] == 3 * len(model.branches)


def test_nic_tta_is_invariant_to_dihedral_transforms():
    torch.manual_seed(0)
    model = build_model("nic-cnn", 4, 2, width=8, depth=4).eval()
    dense = np.random.default_rng(0).normal(size=(4, 10, 10)).astype(np.float32)
    mask = np.ones((10, 10), bool)
    ref = predict_tta(model, dense, mask, crop=10, n_crops=1)
    for k in range(8):
        out = predict_tta(model, np.ascontiguousarray(dihedral(dense, k)), mask, crop=10, n_crops=1)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_nic_crops_are_drawn_by_tissue_density():
    mask = np.zeros((40, 40), bool)
    mask[25:39, 25:39] = True
    dense = np.where(mask, 1.0, 0.0)[None].astype(np.float32)
    rng = np.random.default_rng(0)
    hits = [random_crop(dense, mask, 6, rng)[1][3, 3] for _ in range(200)]
    assert np.mean(hits) > 0.95  # crop centres land on tissue


def _naive_sweep(sweep: Sweep2DLSTM, x: torch.Tensor) -> torch.Tensor:
    """Reference: the 2D-LSTM cell by cell, in raster order (left and top predecessors)."""
    b, _, h, w = x.shape
    hs = [[None] * w for _ in range(h)]
    cs = [[None] * w for _ in range(h)]
    zero = x.new_zeros(b, sweep.hidden)
    for i in range(h):
        for j in range(w):
            hx, cx = (hs[i][j - 1], cs[i][j - 1]) if j > 0 else (zero, zero)
            hy, cy = (hs[i - 1][j], cs[i - 1][j]) if i > 0 else (zero, zero)
            hs[i][j], cs[i][j] = sweep.cell(x[:, :, i, j], hx, hy, cx, cy)
    return torch.stack([torch.stack(r, dim=-1) for r in hs], dim=-2)


def test_ran_lstm_diagonal_sweep_matches_the_naive_loop():
    torch.manual_seed(0)
    sweep = Sweep2DLSTM(5, 7)
    x = torch.randn(2, 5, 6, 9)
    torch.testing.assert_close(sweep(x), _naive_sweep(sweep, x), atol=1e-5, rtol=1e-5)


def test_ran_lstm_cell_sees_all_four_directions():
    torch.manual_seed(0)
    model = build_model("ran-lstm", 3, 2, hidden=6, layers=1)
    x = torch.randn(1, 3, 7, 7, requires_grad=True)
    model(x)[0, 1, 3, 3].backward()
    g = x.grad[0].abs().sum(0)
    for r, c in [(0, 0), (0, 6), (6, 0), (6, 6)]:
        assert g[r, c] > 0, f"no gradient from corner {(r, c)}"


def _fit(model, x, y, steps, per_cell=False, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(x), 8, replace=False))
        out = model(x[idx], torch.ones(len(idx), *x.shape[2:], dtype=torch.bool))
        loss = torch.nn.functional.cross_entropy(out, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("name,kw", [("attention", {"maps": 4}), ("nic-cnn", {"width": 16, "depth": 4})])
def test_slide_models_learn_tumour_presence(name, kw):
    torch.manual_seed(0)
    x, y, _ = _grids(64, seed=1)
    xt, yt, _ = _grids(40, seed=2)
    model = _fit(build_model(name, 8, 2, **kw), x, y, steps=150)
    with torch.no_grad():
        p = torch.softmax(model(xt), 1)[:, 1].numpy()
    assert metrics.auc(yt.numpy(), p) > 0.9


@pytest.mark.parametrize("name,kw", [("ran-cnn", {"width": 16}), ("ran-lstm", {"hidden": 8, "layers": 1})])
def test_per_cell_models_learn_the_blob(name, kw):
    torch.manual_seed(0)
    x, _, cells = _grids(48, seed=3, size=10, blob=4)
    xt, _, ct = _grids(16, seed=4, size=10, blob=4)
    model = _fit(build_model(name, 8, 2, **kw), x, cells, steps=200, lr=1e-2)
    with torch.no_grad():
        pred = model(xt).argmax(1).numpy()
    assert metrics.dice(pred == 1, ct.numpy() == 1) > 0.7


def test_gradcam_points_at_the_blob():
    torch.manual_seed(0)
    x, y, cells = _grids(64, seed=5)
    model = _fit(build_model("nic-cnn", 8, 2, width=16, depth=4), x, y, steps=150)
    i = int(np.flatnonzero(y.numpy())[0])
    cam = gradcam(model, x[i:i + 1], target=1)
    assert cam.shape == (12, 12)
    inside, outside = cam[cells[i].numpy() == 1].mean(), cam[cells[i].numpy() == 0].mean()
    assert inside > outside


def _trained_like_ran_lstm(window: int) -> torch.nn.Module:
    """A 2-layer RAN-LSTM (hidden 32) with its forget-gate biases at +1, as they end up after training."""
    torch.manual_seed(0)
    model = build_model("ran-lstm", 32, 2, hidden=32, layers=2, window=window).eval()
    with torch.no_grad():
        for layer in model.layers:
            for sweep in layer.sweeps:
                sweep.U.bias[32:96] += 1.0  # f_x and f_y: the 2nd and 3rd of the six gates
    return model


def test_ran_lstm_stays_finite_on_whole_slides_and_matches_its_sub_grids():
    """RAN §4.2: trained on 8x8 sub-grids, applied to a slide by moving that window over it. One sweep over a
    96 x 96 grid gave NaN (the cell state grows along the sweep, Eq. 9); windowed, a 128 x 128 grid stays
    within the range of an 8 x 8 sub-grid, and with non-overlapping windows equals the sub-grid results."""
    model = _trained_like_ran_lstm(window=8)
    x = torch.randn(1, 32, 128, 128)
    with torch.no_grad():
        whole = model(x)
        sub = model(x[..., :8, :8])
        one_sweep = model.sweep(x[..., :64, :64])
    assert torch.isfinite(whole).all() and whole.abs().max() < 10 * sub.abs().max() + 10
    assert not torch.isfinite(one_sweep).all() or one_sweep.abs().max() > 100 * sub.abs().max()  # the failure
    model.stride = 8
    model, x = model.double(), x.double()  # float64: the sweep amplifies float32 rounding of batched matmuls
    with torch.no_grad():
        tiled = model(x[..., :32, :32])
        for i in range(0, 32, 8):
            for j in range(0, 32, 8):
                torch.testing.assert_close(tiled[..., i:i + 8, j:j + 8], model.sweep(x[..., i:i + 8, j:j + 8]))
    # The trained side travels with the weights.
    again = build_model("ran-lstm", 32, 2, hidden=32, layers=2)
    again.load_state_dict(build_model("ran-lstm", 32, 2, hidden=32, layers=2, window=6).state_dict())
    assert int(again.window) == 6
