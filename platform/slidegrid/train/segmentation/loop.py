"""The Ray Train loop of one segmentation ensemble member, trained with its paper's recipe (seg_config.SEG_RECIPES):
patches streamed from Ray Data; the DigiPathAI hybrid loss (papers/digipathai-ensemble-segmentation-framework.txt,
"Loss function") or MRN's binary cross-entropy with L2 on the convolution kernels (papers/mrn-multi-resolution-
unet.txt §3.1, §4.1); Adam; a pretrained encoder frozen for the first `freeze_epochs` epochs ("Training"; a
randomly initialised one never is); step LR decay; early stopping on the validation loss.

Every epoch reports metrics and a checkpoint holding the weights of the best validation loss so far (what
inference uses) and the current state (what a restarted run resumes from: same storage path + name).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from ...models.segmentation import EncoderWeights, find_encoder_weights, member_encoder
from ..checkpoints import report_epoch, restore_state
from .config import SegRecipe, SegTrainConfig
from .data import normalize

log = logging.getLogger(__name__)


def member_weights(cfg: SegTrainConfig, member: str) -> EncoderWeights | None:
    """Where the member's encoder starts from (None for MRN, which has no pretrained encoder); looked up on
    the machine that loads it, never downloaded."""
    if member.startswith("mrn-"):
        return None
    return find_encoder_weights(member_encoder(member, cfg.member_kwargs(member).get("encoder")),
                                cfg.encoder_request(member))


def build_member(cfg: SegTrainConfig, member: str):
    """A fresh member network (2 classes: background, tumour), its encoder initialised as --encoder-weights
    finds it; returns (model, EncoderWeights or None)."""
    from ...models import build_model

    weights = member_weights(cfg, member)
    extra = {"encoder_weights": weights} if weights is not None and weights.pretrained else {}
    return build_model(member, 3, 2, **cfg.member_kwargs(member), **extra), weights


def tumour_bce(logits, target):
    """Binary cross-entropy of the tumour probability (papers/mrn-multi-resolution-unet.txt §3.1): logits
    (B, 2, H, W), classes (B, H, W). p = softmax(logits)[:, 1] = sigmoid(l1 - l0), so a 2-logit member stays
    what the ensemble averages (softmax), and this equals 2-class cross-entropy."""
    from torch.nn import functional as F

    return F.binary_cross_entropy_with_logits(logits[:, 1] - logits[:, 0], (target == 1).to(logits.dtype))


def member_loss(recipe: SegRecipe):
    """The recipe's loss: callable(logits (B, 2, H, W), classes (B, H, W)) -> scalar."""
    from ...losses import HybridLoss

    return HybridLoss() if recipe.loss == "hybrid" else tumour_bce


def param_groups(model, l2: float) -> list[dict[str, Any]]:
    """Adam parameter groups: convolution and transposed-convolution kernels get weight decay 2 * l2, all else
    none. Adam's (coupled) weight decay adds wd * W to the gradient, the gradient of (wd / 2) ||W||^2, so this
    is the paper's penalty l2 * ||W||^2 on those layers (MRN §3.1 Eq. 1, §4.1: lambda = 0.005)."""
    from torch import nn

    if not l2:
        return [{"params": list(model.parameters())}]
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
    params = list(model.parameters())
    return [{"params": [p for p in params if id(p) in kernels], "weight_decay": 2 * l2},
            {"params": [p for p in params if id(p) not in kernels], "weight_decay": 0.0}]


def _tensors(batch: dict[str, np.ndarray], device):
    import torch

    return (torch.from_numpy(normalize(batch["image"])).to(device),
            torch.from_numpy(np.asarray(batch["mask"], np.int64)).to(device))


def _validate(model, shard, batch_size: int, loss_fn, device) -> dict[str, float]:
    """Mean loss and pixel Dice of the tumour class over this worker's validation patches."""
    import torch

    model.eval()
    total, n, inter, denom = 0.0, 0, 0.0, 0.0
    with torch.no_grad():
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
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

    from ...models.segmentation import set_encoder_trainable

    config = dict(config)
    member = config.pop("member")
    cfg = SegTrainConfig(**config)
    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    recipe = cfg.recipe(member)
    torch.manual_seed(cfg.seed)
    model, weights = build_member(cfg, member)
    pretrained = weights is not None and weights.pretrained
    freeze = cfg.freeze_epochs_for(member, pretrained)
    source = weights.source if weights is not None else "random (MRN: no pretrained encoder)"
    log.info("%s: encoder weights %s; %s", member, source,
             f"encoder frozen for {freeze} epochs" if freeze else
             "encoder trained from the first epoch" + (" (random weights are never frozen)"
                                                      if not pretrained and recipe.freeze_epochs else ""))
    opt = torch.optim.Adam(param_groups(model, recipe.l2), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=recipe.lr_step or cfg.epochs + 1, gamma=recipe.lr_gamma)
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
    loss_fn = member_loss(recipe)
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        set_encoder_trainable(core, epoch >= freeze)
        model.train()
        total, steps, patches = 0.0, 0, 0
        for batch in train_shard.iter_batches(batch_size=recipe.batch_size, batch_format="numpy"):
            x, y = _tensors(batch, device)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            total, steps, patches = total + float(loss), steps + 1, patches + len(y)
        sched.step()
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(steps, 1), "train_patches": patches,
                                   "lr": sched.get_last_lr()[0], "encoder_frozen": float(epoch < freeze),
                                   "encoder_pretrained": float(pretrained), "epoch_seconds": time.perf_counter() - t0}
        metrics.update(_all_mean(_validate(model, val_shard, recipe.batch_size, loss_fn, device), world))
        if metrics["val_loss"] < best - 1e-6:
            best, stale = metrics["val_loss"], 0
            best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
        else:
            stale += 1
        history.append(metrics)
        report_epoch(metrics, {"model": best_state, "last": core.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "epoch": epoch, "best": best, "stale": stale,
                               "history": history, "member": member, "encoder_weights": source,
                               "encoder_pretrained": pretrained, "freeze_epochs": freeze}
                     if ctx.get_world_rank() == 0 else None)
        # Every rank computed the same averaged val_loss, so all stop together.
        if cfg.patience and stale >= cfg.patience:
            break
