"""The papers' mechanics for the grid models, and learning on grids where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from slidegrid import metrics
from slidegrid.io.grids import Grid
from slidegrid.models import GridStandardizer, build_model
from slidegrid.models.nic_cnn import crop_centres, gradcam, predict_tta, training_crop
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


def _d4(a: np.ndarray, k: int) -> np.ndarray:
    """grids.TRANSFORMS[k] on the last two axes, spelled out: k quarter turns, then (k >= 4) a left-right mirror."""
    for _ in range(k % 4):
        a = np.rot90(a, 1, (-2, -1))
    return a[..., ::-1] if k >= 4 else a


def _window(a: np.ndarray, r: int, c: int, size: int) -> np.ndarray:
    """The size x size window of a (..., H, W) array whose top-left is (r - size // 2, c - size // 2), zeros
    beyond the grid."""
    padded = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(size, size)] * 2)
    return padded[..., r - size // 2 + size:r - size // 2 + 2 * size, c - size // 2 + size:c - size // 2 + 2 * size]


def _tta_case(seed: int = 0):
    """A 9 x 13 grid with empty cells, and a NIC CNN trained (so it says) on 6 x 6 crops behind a standardizer
    whose mean is not 0 (so a forward pass without the mask would see empty cells as -mean/std, not 0)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((9, 13), bool)
    mask[1:8, 2:12] = True
    mask[4, 5] = mask[2, 9] = False
    dense = np.where(mask, rng.normal(size=(4, 9, 13)), 0).astype(np.float32)
    torch.manual_seed(seed)
    net = build_model("nic-cnn", 4, 2, width=8, depth=2, crop=6)
    model = GridStandardizer(net, [0.5, -0.3, 0.2, 1.0], [1.5, 0.7, 1.0, 2.0]).eval()
    return dense, mask, model


def _expected_tta(model, views, mask, centres, size):
    """{(k, centre): logits} of the model on each crop of transform k's view, arranged by k, with its mask."""
    out = {}
    with torch.no_grad():
        for k in range(8):
            for rc in centres:
                x = np.ascontiguousarray(_d4(_window(views[k], *rc, size), k))
                m = np.ascontiguousarray(_d4(_window(mask, *rc, size), k))
                out[k, rc] = model(torch.from_numpy(x)[None].float(), torch.from_numpy(m)[None])[0]
    return out


def test_nic_tta_is_the_mean_over_8_transforms_x_t_crops_of_the_trained_side():
    """NIC §3.2/§4.5: T crops x 8 transforms averaged, each crop R x R with R the side the model trained on."""
    dense, mask, model = _tta_case()
    centres = crop_centres(mask, 3)
    assert len(set(centres)) == 3 and all(mask[rc] for rc in centres)
    outs = _expected_tta(model, [dense] * 8, mask, centres, 6)
    got = predict_tta(model, dense, mask, n_crops=3)  # R from the model's `crop` buffer
    torch.testing.assert_close(got, torch.stack(list(outs.values())).mean(0), atol=1e-5, rtol=1e-5)
    # The model is not dihedral-invariant, so a TTA that skipped transforms would fail the check above.
    per_k = torch.stack([torch.stack([outs[k, rc] for rc in centres]).mean(0) for k in range(8)])
    # (Differences of 5e-4 are 50x the tolerance of the equality above.)
    assert per_k.std(0).max() > 5e-4
    assert (got - per_k[0]).abs().max() > 5e-4  # differs from the identity-only prediction
    # Another crop side is another answer: the trained one is what is used.
    assert (predict_tta(model, dense, mask, crop=10, n_crops=3) - got).abs().max() > 5e-4


def test_nic_tta_uses_the_grids_encoded_transforms():
    """With a --dihedral grid, transform k of each crop holds the tiles' k-th encodings (NIC §3.2)."""
    dense, mask, model = _tta_case(seed=1)
    rng = np.random.default_rng(2)
    row, col = np.nonzero(mask)
    stack = rng.normal(size=(8, len(row), 4)).astype(np.float32)
    stack[0] = dense[:, row, col].T
    grid = Grid(meta={"grid_shape": list(mask.shape), "code_size": 4, "dihedral": True}, row=row, col=col,
                x=col * 32, y=row * 32, tissue=np.ones(len(row), np.float32), embedding=stack[0], transforms=stack)
    views = []
    for k in range(8):
        v = np.zeros_like(dense)
        v[:, row, col] = stack[k].T
        views.append(v)
    centres = crop_centres(mask, 2)
    outs = _expected_tta(model, views, mask, centres, 6)
    got = predict_tta(model, dense, mask, n_crops=2, grid=grid)
    torch.testing.assert_close(got, torch.stack(list(outs.values())).mean(0), atol=1e-5, rtol=1e-5)
    assert (got - predict_tta(model, dense, mask, n_crops=2)).abs().max() > 5e-4  # not the arrangement-only TTA


def test_nic_training_crop_centres_follow_the_distance_to_background():
    """NIC §3.2: crops "sampled proportionally to the distance to background". Beyond the grid's edge is
    background too: a tissue cell on the edge weighs 1, like one beside glass."""
    mask = np.zeros((12, 14), bool)
    mask[0:7, 2:11] = True  # a block on the top edge
    mask[9:11, 3:5] = True  # a 2 x 2 speck
    mask[10, 9:14] = True  # a strip out to the right edge
    background = np.argwhere(~np.pad(mask, 1)) - 1
    expected = np.zeros(mask.shape)
    for r, c in np.argwhere(mask):
        expected[r, c] = np.sqrt(((background - (r, c)) ** 2).sum(1)).min()
    expected /= expected.sum()
    # The layout tells the paper's weights from a uniform draw on tissue and from an edge-blind distance.
    edge_blind = ndimage.distance_transform_edt(mask)
    for other in (mask / mask.sum(), edge_blind / edge_blind.sum()):
        assert 0.5 * np.abs(expected - other).sum() > 0.14
    # Each cell's embedding is its (row, col); an odd crop side keeps the centre cell in the middle under D4.
    dense = np.stack(np.indices(mask.shape)).astype(np.float32)
    rng = np.random.default_rng(0)
    counts = np.zeros(mask.shape)
    n = 8000
    for _ in range(n):
        x, m = training_crop(dense, mask, 5, rng)
        assert m[2, 2]
        counts[int(x[0, 2, 2]), int(x[1, 2, 2])] += 1
    assert 0.5 * np.abs(counts / n - expected).sum() < 0.06  # sampling noise here is about 0.04


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


def test_ran_cnn_predicts_a_slide_in_windows_of_its_training_sub_grids():
    """RAN §4: RAN-CNN also sees 8 x 8 2D-grids in training and validation; on a whole grid it answers with the
    same windows (half-overlapping, averaged), so a cell never gets neighbours the sub-grids never had."""
    torch.manual_seed(0)
    model = build_model("ran-cnn", 4, 2, width=16, window=8).eval()
    x = torch.randn(1, 4, 24, 24)
    with torch.no_grad():
        windowed, whole = model(x), model.sweep(x)
        assert not torch.allclose(windowed, whole, atol=1e-4)  # the whole-grid pass differs near window borders
        model.stride = 8
        tiled = model(x)
        for i in range(0, 24, 8):
            for j in range(0, 24, 8):
                torch.testing.assert_close(tiled[..., i:i + 8, j:j + 8], model.sweep(x[..., i:i + 8, j:j + 8]))


def test_a_model_registers_with_its_card_and_the_trainer_reads_it(tmp_path, monkeypatch):
    """An aggregator added with register_model (no other file touched) is a valid --model, its card decides
    per-cell vs per-slide and crop training; and no module of the package branches on a model's name."""
    import re
    from pathlib import Path

    from slidegrid.errors import ConfigError
    from slidegrid.models import ModelCard, register_model, registered
    from slidegrid.models import registry as reg
    from slidegrid.models.attention import AttentionClassifier
    from slidegrid.train.aggregator.config import TrainConfig
    from slidegrid.train.aggregator.inference import slide_batch

    monkeypatch.setattr(reg, "_FACTORIES", dict(reg._FACTORIES))
    monkeypatch.setattr(reg, "_CARDS", dict(reg._CARDS))
    register_model("toy-crops", AttentionClassifier, ModelCard("aggregator", "a test", view="crop"))
    for bad in ({"view": "crops"}, {"heatmap": "attention"}, {"kind": "aggregators"}):  # misspelt: refused
        with pytest.raises(ValueError, match=f"ModelCard {next(iter(bad))}="):
            ModelCard(**{"kind": "aggregator", "paper": "a test", **bad})
    assert "toy-crops" in registered("aggregator")
    cfg = TrainConfig(grids=str(tmp_path), cohort=str(tmp_path / "c.csv"), out=str(tmp_path), model="toy-crops",
                      crop=4)
    with pytest.raises(ConfigError, match="per cell"):
        TrainConfig(grids=str(tmp_path), cohort=str(tmp_path / "c.csv"), out=str(tmp_path), model="toy-crops",
                    task="segmentation")

    class _Cache:
        def get(self, uri):
            return np.ones((3, 12, 12), np.float32), np.ones((12, 12), bool), None

    class _Example:
        grid, label, target = "g", 1, 0.0

    x, m, _ = slide_batch(cfg, [_Example()], _Cache(), np.random.default_rng(0))
    assert x.shape[-2:] == (4, 4), "the card's crop view did not reach training"

    package = Path(__file__).resolve().parents[2] / "platform" / "slidegrid"
    names = "|".join(re.escape(n) for n in registered())
    branches = [f"{p.relative_to(package)}: {line.strip()}" for p in package.rglob("*.py")
                for line in p.read_text().splitlines() if re.search(rf"[=!]= ?[\"']({names})[\"']", line)]
    assert not branches, f"code branches on a model's name (put it in the model's card): {branches}"
