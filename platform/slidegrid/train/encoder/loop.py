"""The Ray Train loop of `train-encoder`, on every worker: read the worker's shard of the tile stream, step
the method, average gradients across workers, score the validation stream when there is one (a patch set's
`--val-split`), report and checkpoint every epoch, resume from the last one.

With validation, the checkpoint also carries the weights of the epoch with the lowest validation loss
(`best`), which the driver saves as the encoder, except for methods whose loss does not rank representations
(BiGAN: `selects_on_validation` false; its last epoch is kept).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..checkpoints import report_epoch, restore_state
from .config import EncoderTrainConfig


def method_for(cfg: EncoderTrainConfig):
    """The config's method with the options its card names (VAE: gamma)."""
    from ...encoders.learned import method_class

    cls = method_class(cfg.method)
    return cls(cfg.net, **{name: getattr(cfg, name) for name in cls.options})


def to_tensors(batch: dict[str, np.ndarray], device=None) -> dict:
    """A numpy batch of the tile stream as tensors: images normalized to [-1, 1] (N, 3, T, T), labels as is."""
    import torch

    from ...encoders.nets import to_input

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


def validate(method, shard, batch_size: int, device, distributed: bool) -> dict[str, float]:
    """`val_*` means of the method's evaluate() over this worker's validation shard (every row, batch-size
    weighted), summed across workers when distributed; {} for an empty shard."""
    import torch
    import torch.distributed as dist

    method.eval()
    sums: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=False):
            tensors = to_tensors(batch, device)
            k = len(tensors["image"])
            for key, v in method.evaluate(tensors).items():
                sums[key] = sums.get(key, 0.0) + v * k
            n += k
    keys = sorted(sums)
    if distributed:
        flat = torch.tensor([sums[key] for key in keys] + [float(n)], dtype=torch.float64)
        dist.all_reduce(flat)
        sums, n = dict(zip(keys, flat[:-1].tolist())), int(flat[-1])
    return {f"val_{key}": sums[key] / n for key in keys} if n else {}


def encoder_train_loop(config: dict[str, Any]) -> None:
    """Ray Train entry point (runs on each worker)."""
    import ray.train
    import torch
    import torch.distributed as dist

    from ...encoders.method import no_sync

    cfg = EncoderTrainConfig(**config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # One thread per reserved CPU: more threads than cores thrash when workers share a machine.
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    method = method_for(cfg).to(device)
    opts = method.optimizers(cfg.learning_rate)
    start, history, best = 0, [], None
    state = restore_state(device)
    if state:
        method.load_state_dict(state["method"])
        for opt, s in zip(opts, state["optimizers"]):
            opt.load_state_dict(s)
        start, history, best = state["epoch"] + 1, state["history"], state.get("best")
    distributed = world > 1 and dist.is_initialized()
    if distributed:  # identical starting weights on every worker (same seed already; this makes it certain)
        for t in method.state_dict().values():
            dist.broadcast(t, src=0)
    sync = average_gradients if distributed else no_sync
    shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if cfg.val_split else None
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
        if val_shard is not None:
            metrics.update(validate(method, val_shard, cfg.batch_size, device, distributed))
            if method.selects_on_validation and "val_loss" in metrics and \
                    (best is None or metrics["val_loss"] < best["val_loss"]):
                best = {"epoch": epoch, "val_loss": metrics["val_loss"],
                        "method": {k: v.detach().clone() for k, v in method.state_dict().items()}}
            if best is not None:
                metrics["best_epoch"] = best["epoch"]
        history.append(metrics)
        state = {"method": method.state_dict(), "optimizers": [o.state_dict() for o in opts], "epoch": epoch,
                 "history": history, **({"best": best} if best is not None else {})}
        report_epoch(metrics, state if rank == 0 else None)
