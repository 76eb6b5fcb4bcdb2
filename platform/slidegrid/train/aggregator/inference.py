"""Turning grids into model inputs and model outputs into slide predictions and heatmaps (training, validation,
predict)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from ...io.grids import Grid
    from .config import TrainConfig
    from .data import CohortExamples, Example, GridCache


def n_outputs(cfg: TrainConfig, data: CohortExamples) -> int:
    """Logits per slide (classification), 1 (regression) or classes per cell (segmentation: 2)."""
    return {"classification": len(data.classes), "regression": 1, "segmentation": 2}[cfg.task]


def _pad(items: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack (C, H, W) grids of different sizes: zero padding, masked out (the models ignore masked cells)."""
    h = max(g.shape[1] for g, _ in items)
    w = max(g.shape[2] for g, _ in items)
    x = np.zeros((len(items), items[0][0].shape[0], h, w), np.float32)
    m = np.zeros((len(items), h, w), bool)
    for i, (g, mk) in enumerate(items):
        x[i, :, : g.shape[1], : g.shape[2]] = g
        m[i, : g.shape[1], : g.shape[2]] = mk
    return x, m


def slide_batch(cfg: TrainConfig, examples: Sequence[Example], cache: GridCache, rng: np.random.Generator):
    """(x, mask, target) tensors for slide-level tasks; for nic-cnn one NIC §3.2 crop per slide under a random
    element of D4 (models/nic_cnn.training_crop: the grid's encoded transforms when it has them), the
    attention paper's slide augmentation (train/aggregator/augment.py) where `cfg.augment`."""
    import torch

    from ...models import model_card
    from ...models.nic_cnn import training_crop
    from .augment import paper_augment

    crops = model_card(cfg.model).view == "crop"
    items = []
    for e in examples:
        dense, mask, grid = cache.get(e.grid)
        if crops:
            dense, mask = training_crop(dense, mask, cfg.crop, rng, grid)
        elif cfg.augment:
            dense, mask = paper_augment(dense, mask, rng)
        items.append((np.ascontiguousarray(dense), np.ascontiguousarray(mask)))
    x, m = _pad(items)
    if cfg.task == "regression":
        target = torch.tensor([e.target for e in examples], dtype=torch.float32)
    else:
        target = torch.tensor([e.label for e in examples], dtype=torch.long)
    return torch.from_numpy(x), torch.from_numpy(m), target


def subgrid_batch(cfg: TrainConfig, items: Sequence[tuple[tuple[np.ndarray, np.ndarray, Any], np.ndarray]],
                  rng: np.random.Generator):
    """RAN's class-balanced sub-grids (S x S): half centred on a positive cell when the slide has one."""
    import torch

    s = cfg.subgrid
    xs, ms, ys = [], [], []
    for (dense, mask, _), labels in items:
        _, h, w = dense.shape
        pos = np.argwhere((labels > 0) & mask)
        pool = pos if len(pos) and rng.random() < 0.5 else np.argwhere(mask)
        if not len(pool):
            pool = np.argwhere(np.ones_like(mask))
        r, c = pool[rng.integers(len(pool))]
        r0 = int(np.clip(r - s // 2, 0, max(0, h - s)))
        c0 = int(np.clip(c - s // 2, 0, max(0, w - s)))
        x = np.zeros((dense.shape[0], s, s), np.float32)
        m = np.zeros((s, s), bool)
        y = np.full((s, s), -1, np.int64)
        crop = (slice(r0, r0 + s), slice(c0, c0 + s))
        ch, cw = dense[:, crop[0], crop[1]].shape[1:]
        x[:, :ch, :cw] = dense[:, crop[0], crop[1]]
        m[:ch, :cw] = mask[crop]
        y[:ch, :cw] = np.where(mask[crop], labels[crop], -1)
        xs.append(x)
        ms.append(m)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ms)), torch.from_numpy(np.stack(ys))


def predict_grid(model, cfg_model: str, dense: np.ndarray, mask: np.ndarray, device, test_crops: int = 10,
                 crop: int | None = None, grid: Grid | None = None):
    """Model output for one whole grid: logits (n_outputs,) per slide, or (n_outputs, H, W) per cell.

    nic-cnn averages T crops of the side it was trained on (`crop`, else the model's own) x the 8 elements of
    D4 (NIC §3.2, §4.5; models/nic_cnn.predict_tta, which uses the encoded transforms of a `grid` read with
    them); the others see the whole grid.
    """
    import torch

    from ...models import model_card
    from ...models.nic_cnn import predict_tta

    model.eval()
    with torch.no_grad():
        if model_card(cfg_model).view == "crop":
            return predict_tta(model, dense, mask, crop=crop, n_crops=test_crops, device=device, grid=grid)
        x = torch.from_numpy(dense[None]).to(device)
        m = torch.from_numpy(mask[None]).to(device)
        return model(x, m)[0].float().cpu()


def evaluate(model, cfg: TrainConfig, examples: Sequence[Example], cache: GridCache, device, prefix: str = "val",
             ci: bool = False) -> dict[str, float]:
    """Loss and the task's metrics over whole slides, named `<prefix>_<metric>`; with `ci`, each metric's 95%
    bootstrap interval over slides as `<prefix>_<metric>_ci_low/_ci_high`.

    Classification: AUC (two classes), accuracy, F1 of class 1 (two classes). Regression: Spearman (the
    attention paper's TUPAC measure). Per-cell segmentation: Dice averaged over slides, and precision, recall
    and F1 of tumour cells pooled over slides (RAN §5 reports pooled figures).
    """
    import torch
    import torch.nn.functional as F

    from ... import metrics
    from .data import cell_labels

    losses, scores, truths, counts, dices = [], [], [], [], []
    for e in examples:
        dense, mask, grid = cache.get(e.grid)
        out = predict_grid(model, cfg.model, dense, mask, device, cfg.test_crops, cfg.crop, grid)
        if cfg.task == "segmentation":
            labels = torch.from_numpy(np.where(mask, cell_labels(grid, e.annotation, cfg.storage_options), -1))
            losses.append(float(F.cross_entropy(out[None], labels[None], ignore_index=-1)))
            pred, truth = out.argmax(0).numpy()[mask] == 1, labels.numpy()[mask] == 1
            dices.append(metrics.dice(pred, truth))
            counts.append((np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth)))
        elif cfg.task == "regression":
            losses.append(float((out.squeeze() - e.target) ** 2))
            scores.append(float(out.squeeze()))
            truths.append(float(e.target))
        else:
            losses.append(float(F.cross_entropy(out[None], torch.tensor([e.label]))))
            scores.append(torch.softmax(out, 0).numpy())
            truths.append(e.label)
    stats: dict[str, Any] = {"loss": lambda i: np.mean(np.asarray(losses)[i])}
    if cfg.task == "segmentation":
        tp_fp_fn = np.asarray(counts, np.float64).reshape(-1, 3)

        def pooled(i, k):
            tp, fp, fn = tp_fp_fn[i].sum(0)
            return [tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0,
                    2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0][k]

        stats.update({"dice": lambda i: np.mean(np.asarray(dices)[i]), "precision": lambda i: pooled(i, 0),
                      "recall": lambda i: pooled(i, 1), "f1": lambda i: pooled(i, 2)})
    elif cfg.task == "regression":
        y, s = np.asarray(truths), np.asarray(scores)
        stats["spearman"] = lambda i: metrics.spearman(y[i], s[i])
    else:
        probs, y = np.stack(scores), np.asarray(truths)
        stats["accuracy"] = lambda i: np.mean(probs[i].argmax(1) == y[i])
        if probs.shape[1] == 2:
            # AUC and F1 are undefined on a resample of one class (F1 would read 0 for a perfect model).
            both = lambda i: len(set(y[i].tolist())) == 2  # noqa: E731
            stats["auc"] = lambda i: metrics.auc(y[i], probs[i, 1]) if both(i) else np.nan
            stats["f1"] = lambda i: metrics.precision_recall_f1(y[i], probs[i].argmax(1))["f1"] if both(i) else np.nan
    everyone = np.arange(len(examples))
    result: dict[str, float] = {}
    for name, fn in stats.items():
        result[f"{prefix}_{name}"] = float(fn(everyone))
        if ci and name != "loss":
            low, high = metrics.bootstrap_ci(fn, len(examples))
            result.update({f"{prefix}_{name}_ci_low": low, f"{prefix}_{name}_ci_high": high})
    return result


def heatmap(model, model_name: str, dense: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W) map in [0, 1]: the model's attention maps where its card says so (ModelCard.heatmap), else Grad-CAM
    of the positive class (NIC §3.3)."""
    import torch

    from ...models import model_card
    from ...models.nic_cnn import gradcam

    x = torch.from_numpy(dense[None])
    m = torch.from_numpy(mask[None])
    if model_card(model_name).heatmap == "maps":
        with torch.no_grad():
            maps = model.attention_maps(x, m)[0].float()  # (maps, H, W)
        amap = maps.max(0).values.numpy()
    else:
        amap = gradcam(model, x, m, target=-1)
    amap = np.where(mask, amap, 0.0)
    hi = amap.max()
    return amap / hi if hi > 0 else amap


def write_heatmaps(model, model_name: str, grid_uris: Sequence[str], cache, out_dir: str,
                   storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """One PNG per grid: the heatmap over the slide thumbnail (falls back to the bare map without the slide)."""
    from ...io.slides import open_slide
    from ...viz import heatmap_overlay, save_png

    written = []
    for uri in grid_uris:
        dense, mask, grid = cache.get(uri)
        hm = heatmap(model, model_name, dense, mask)
        try:
            with open_slide(grid.meta["source_uri"], storage_options, grid.meta.get("mpp_override"),
                            grid.meta.get("reader", "auto")) as s:
                H, mpp_y = s.info.dimensions[1], s.mpp_xy[1]
                thumb = s.thumbnail(max(*s.mpp_xy, mpp_y * H / 512))
        except Exception:
            thumb = np.full((hm.shape[0] * 8, hm.shape[1] * 8, 3), 255, np.uint8)
        # The grid starts at the slide's top-left corner: place it there on the thumbnail.
        step_um = float(grid.meta["target_mpp"]) * float(grid.meta["stride"])
        slide_w_um = float(grid.meta["slide_dimensions"][0]) * float(grid.meta["slide_mpp"])
        px_per_cell = thumb.shape[1] * step_um / slide_w_um
        canvas = np.zeros(thumb.shape[:2], np.float32)
        h, w = hm.shape
        fh, fw = round(h * px_per_cell), round(w * px_per_cell)
        ch, cw = min(thumb.shape[0], fh), min(thumb.shape[1], fw)
        if ch and cw:
            # Scaled whole, then cut at the slide's edge: a partial last column/row runs past the thumbnail.
            full = cv2.resize(hm.astype(np.float32), (fw, fh), interpolation=cv2.INTER_NEAREST)
            canvas[:ch, :cw] = full[:ch, :cw]
        path = os.path.join(out_dir, f"{grid.meta['slide_id']}_heatmap.png")
        save_png(heatmap_overlay(thumb, canvas), path)
        written.append(path)
    return written
