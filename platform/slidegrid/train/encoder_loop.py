"""The Ray Train loop of `train-encoder`, on every worker: read the worker's shard of the tile stream, step
the method, average gradients across workers, report and checkpoint every epoch, resume from the last one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from .checkpoints import report_epoch, restore_state
from .encoder_config import EncoderTrainConfig


def method_for(cfg: EncoderTrainConfig):
    """The config's method with its options (VAE: gamma)."""
    from ..encoders.learned import build_method

    return build_method(cfg.method, cfg.net, **({"gamma": cfg.gamma} if cfg.method == "vae" else {}))


def to_tensors(batch: dict[str, np.ndarray], device=None) -> dict:
    """A numpy batch of the tile stream as tensors: images normalized to [-1, 1] (N, 3, T, T), labels as is."""
    import torch

    from ..encoders.nets import to_input

    # np.require copies the read-only arrays Ray Data hands out (torch would warn about sharing them).
    return {k: to_input(torch.from_numpy(np.require(v, requirements=["C", "W"])).to(device)) if k.startswith("image")
            else torch.as_tensor(np.asarray(v)).to(device) for k, v in batch.items() if k in
            ("image", "image2", "same", "label")}


def average_gradients(params: Iterable) -> None:
    """All-reduce the gradients of `params` as one flat buffer and divide by the world size (DDP's mean)."""
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def encoder_train_loop(config: dict[str, Any]) -> None:
    """Ray Train entry point (runs on each worker)."""
    import ray.train
    import torch
    import torch.distributed as dist

    from ..encoders.method import no_sync

    cfg = EncoderTrainConfig(**config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # One thread per reserved CPU: more threads than cores thrash when workers share a machine.
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    method = method_for(cfg).to(device)
    opts = method.optimizers(cfg.learning_rate)
    start, history = 0, []
    state = restore_state(device)
    if state:
        method.load_state_dict(state["method"])
        for opt, s in zip(opts, state["optimizers"]):
            opt.load_state_dict(s)
        start, history = state["epoch"] + 1, state["history"]
    distributed = world > 1 and dist.is_initialized()
    if distributed:  # identical starting weights on every worker (same seed already; this makes it certain)
        for t in method.state_dict().values():
            dist.broadcast(t, src=0)
    sync = average_gradients if distributed else no_sync
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(start, cfg.epochs):
        method.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        steps = 0
        # Ray Train splits the stream equally across workers, so with drop_last every worker takes the same
        # number of steps (each step's all-reduce needs all of them).
        for batch in shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy", drop_last=True):
            for k, v in method.training_step(to_tensors(batch, device), opts, sync).items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        seconds = time.perf_counter() - t0
        tiles = steps * cfg.batch_size * world
        metrics = {"epoch": epoch, **{f"train_{k}": v / max(steps, 1) for k, v in sums.items()}, "steps": steps,
                   "tiles": tiles, "epoch_seconds": seconds, "tiles_per_s": tiles / seconds if seconds else 0.0,
                   "resumed_from": start}
        history.append(metrics)
        report_epoch(metrics, {"method": method.state_dict(), "optimizers": [o.state_dict() for o in opts],
                               "epoch": epoch, "history": history} if rank == 0 else None)
