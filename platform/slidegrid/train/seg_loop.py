"""The Ray Train loop of one segmentation ensemble member (papers/digipathai-ensemble-segmentation-framework.txt,
"Loss function" and "Training"): patches streamed from Ray Data, the hybrid loss, Adam, the encoder frozen for
the first `freeze_epochs` epochs, step LR decay, early stopping on the validation loss.

Every epoch reports metrics and a checkpoint holding the weights of the best validation loss so far (what
inference uses) and the current state (what a restarted run resumes from: same storage path + name).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..seg_patches import normalize
from .checkpoints import report_epoch, restore_state
from .seg_config import SegTrainConfig


def build_member(cfg: SegTrainConfig, member: str):
    """A fresh member network (2 classes: background, tumour)."""
    from ..models import build_model

    return build_model(member, 3, 2, **cfg.member_kwargs(member))


def _tensors(batch: dict[str, np.ndarray], device):
    import torch

    return (torch.from_numpy(normalize(batch["image"])).to(device),
            torch.from_numpy(np.asarray(batch["mask"], np.int64)).to(device))


def _validate(model, shard, cfg: SegTrainConfig, loss_fn, device) -> dict[str, float]:
    """Mean loss and pixel Dice of the tumour class over this worker's validation patches."""
    import torch

    model.eval()
    total, n, inter, denom = 0.0, 0, 0.0, 0.0
    with torch.no_grad():
        for batch in shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy"):
            x, y = _tensors(batch, device)
            logits = model(x)
            total += float(loss_fn(logits, y)) * len(y)
            n += len(y)
            pred = logits.argmax(1) == 1
            inter += float((pred & (y == 1)).sum())
            denom += float(pred.sum() + (y == 1).sum())
    return {"val_loss": total / max(n, 1), "val_dice": 2 * inter / denom if denom else 1.0, "val_patches": n}


def _all_mean(values: dict[str, float], world: int) -> dict[str, float]:
    """Average metrics over workers (each validated its own shard)."""
    if world == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(values, (t / world).tolist()))


def seg_train_loop(config: dict[str, Any]) -> None:
    """Ray Train entry point (runs on each worker); `config` is a SegTrainConfig dict plus `member`."""
    import ray.train
    import torch

    from ..losses import HybridLoss
    from ..models.segmentation import set_encoder_trainable

    config = dict(config)
    member = config.pop("member")
    cfg = SegTrainConfig(**config)
    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    torch.manual_seed(cfg.seed)
    model = build_member(cfg, member)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step or cfg.epochs + 1, gamma=cfg.lr_gamma)
    start, best, stale, history, best_state = 0, math.inf, 0, [], None
    state = restore_state()
    if state:
        model.load_state_dict(state["last"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best, stale, history, best_state = (state["epoch"] + 1, state["best"], state["stale"],
                                                   state["history"], state["model"])
    # DDP must know up front that frozen encoder parameters receive no gradient in the first epochs.
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    core = model.module if hasattr(model, "module") else model
    device = ray.train.torch.get_device()
    loss_fn = HybridLoss()
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        set_encoder_trainable(core, epoch >= cfg.freeze_epochs)
        model.train()
        total, steps, patches = 0.0, 0, 0
        for batch in train_shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy"):
            x, y = _tensors(batch, device)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            total, steps, patches = total + float(loss), steps + 1, patches + len(y)
        sched.step()
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(steps, 1), "train_patches": patches,
                                   "lr": sched.get_last_lr()[0], "encoder_frozen": float(epoch < cfg.freeze_epochs),
                                   "epoch_seconds": time.perf_counter() - t0}
        metrics.update(_all_mean(_validate(model, val_shard, cfg, loss_fn, device), world))
        if metrics["val_loss"] < best - 1e-6:
            best, stale = metrics["val_loss"], 0
            best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
        else:
            stale += 1
        history.append(metrics)
        report_epoch(metrics, {"model": best_state, "last": core.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "epoch": epoch, "best": best, "stale": stale,
                               "history": history, "member": member} if ctx.get_world_rank() == 0 else None)
        # Every rank computed the same averaged val_loss, so all stop together.
        if cfg.patience and stale >= cfg.patience:
            break
