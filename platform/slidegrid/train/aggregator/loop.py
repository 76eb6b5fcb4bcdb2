"""The Ray Train loop that runs on every worker: sample grids, step, validate, checkpoint, resume.

Each worker takes its shard of the training slides and the same number of steps (DDP needs equal step
counts). Rank 0 validates and decides early stopping; the decision is broadcast so all ranks stop together.
A checkpoint is reported every `report_every` epochs and at the last one; a restarted run (same storage path +
name) resumes from the last checkpoint.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..checkpoints import report_epoch, restore_state
from .config import TrainConfig
from .data import CohortExamples, Example, GridCache, cell_labels, load_examples
from .inference import evaluate, n_outputs, slide_batch, subgrid_batch
from .recipes import steps_per_epoch


def channel_stats(examples: list[Example], cache: GridCache) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the embeddings over the kept cells of the training grids."""
    total = total_sq = None
    n = 0
    for e in examples:
        dense, mask, _ = cache.get(e.grid)
        cells = dense[:, mask].astype(np.float64)
        total = cells.sum(1) if total is None else total + cells.sum(1)
        total_sq = (cells ** 2).sum(1) if total_sq is None else total_sq + (cells ** 2).sum(1)
        n += cells.shape[1]
    mean = total / max(n, 1)
    return mean, np.sqrt(np.maximum(total_sq / max(n, 1) - mean ** 2, 0))


def build(cfg: TrainConfig, data: CohortExamples, stats: tuple[np.ndarray, np.ndarray] | None = None):
    """Model (standardizing its input), optimizer and LR schedule for a config."""
    import torch

    from ...models import GridStandardizer, build_model

    mean, std = stats if stats is not None else (np.zeros(data.code_size), np.ones(data.code_size))
    net = build_model(cfg.model, data.code_size, n_outputs(cfg, data), **cfg.model_kwargs)
    if isinstance(getattr(net, "window", None), torch.Tensor):  # a model trained on sub-grids predicts with
        net.window.fill_(cfg.subgrid)  # windows of the side it saw (RAN models); the buffer travels in checkpoints
    if isinstance(getattr(net, "crop", None), torch.Tensor):  # NIC predicts on crops of the side it trained on
        net.crop.fill_(cfg.crop)
    model = GridStandardizer(net, mean, std)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = cfg.lr_step or cfg.epochs + 1
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=cfg.lr_gamma)
    return model, opt, sched


def _loss(cfg: TrainConfig, out, target):
    import torch.nn.functional as F

    if cfg.task == "regression":
        return F.mse_loss(out.squeeze(-1), target.float())
    if cfg.task == "segmentation":
        return F.cross_entropy(out, target, ignore_index=-1)
    return F.cross_entropy(out, target)


def _batch(cfg: TrainConfig, examples: list[Example], cache: GridCache, rng: np.random.Generator):
    """Inputs and targets for one optimizer step."""
    if cfg.task == "segmentation":
        items = [(cache.get(e.grid), cell_labels(cache.get(e.grid)[2], e.annotation, cfg.storage_options))
                 for e in examples]
        return subgrid_batch(cfg, items, rng)
    return slide_batch(cfg, examples, cache, rng)


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train entry point (runs on each worker)."""
    import ray.train
    import torch
    import torch.distributed as dist

    cfg = TrainConfig(**config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)
    data = load_examples(cfg.grids, cfg.cohort, cfg.task, cfg.storage_options)
    # The test set never reaches the workers: only train and validation (which selects the kept model).
    split = data.split(cfg.val_fold, cfg.test_fold)
    train, val = split.train, split.val
    cache = GridCache(cfg.storage_options)
    model, opt, sched = build(cfg, data, channel_stats(train, cache))
    start, best, stale, history = 0, math.inf, 0, []
    best_model, best_epoch = None, -1
    state = restore_state()
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best, stale, history = state["epoch"] + 1, state["best"], state["stale"], state["history"]
        best_model, best_epoch = state["best_model"], state["best_epoch"]
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    mine = train[rank::world] or train
    steps = steps_per_epoch(cfg.samples_per_epoch, len(train), cfg.batch_size, world)
    for epoch in range(start, cfg.epochs):
        t_epoch = time.perf_counter()
        model.train()
        rng = np.random.default_rng(cfg.seed * 100_003 + epoch * 101 + rank)
        order = [mine[i % len(mine)] for i in rng.permutation(max(len(mine), steps * cfg.batch_size))]
        total = 0.0
        for s in range(steps):
            x, mask, target = _batch(cfg, order[s * cfg.batch_size:(s + 1) * cfg.batch_size], cache, rng)
            opt.zero_grad()
            loss = _loss(cfg, model(x.to(device), mask.to(device)), target.to(device))
            loss.backward()
            opt.step()
            total += loss.item()
        sched.step()
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": total / steps, "lr": sched.get_last_lr()[0],
                                   "resumed_from": start, "epoch_seconds": time.perf_counter() - t_epoch,
                                   "train_grids": len(train)}
        stop = torch.zeros(1)
        if rank == 0:
            core = model.module if hasattr(model, "module") else model
            metrics.update(evaluate(core, cfg, val, cache, device))
            improved = metrics["val_loss"] < best - 1e-6
            best, stale = (metrics["val_loss"], 0) if improved else (best, stale + 1)
            if improved:  # model selection: the epoch with the lowest validation loss is the model kept
                best_model = {k: v.detach().clone() for k, v in core.state_dict().items()}
                best_epoch = epoch
            metrics["best_epoch"] = best_epoch
            stop[0] = float(bool(cfg.patience) and stale >= cfg.patience)
            history.append(metrics)
        if world > 1 and dist.is_initialized():
            dist.broadcast(stop, src=0)
        state = None
        if rank == 0:
            core = model.module if hasattr(model, "module") else model
            state = {"model": core.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "epoch": epoch, "best": best, "stale": stale, "history": history,
                     "best_model": best_model, "best_epoch": best_epoch,
                     "classes": list(data.classes), "code_size": data.code_size}
        # Every rank reaches the same decision (stop is broadcast): Ray Train's report is a barrier. Epochs in
        # between are not lost to a restart: their metrics ride in the next state, and a resumed run replays
        # them from the last checkpoint (the best model included).
        report = (epoch + 1) % cfg.report_every == 0 or epoch == cfg.epochs - 1 or bool(stop.item())
        report_epoch(metrics, state, report, cfg.epochs)
        if stop.item():
            break
