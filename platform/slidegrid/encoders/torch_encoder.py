"""Running any torch module as a tile encoder: normalization on the device, no grad; on GPU bf16 autocast,
channels-last for convnets, optional torch.compile, and batches cut into chunks that fit the GPU."""

from __future__ import annotations

import logging
import time

import numpy as np

from .base import Encoder, EncoderSpec

log = logging.getLogger(__name__)


def convolutional(module) -> bool:
    """Whether a network is a convnet: more than one 2-D convolution (a ViT has one, its patch embedding).

    Channels-last lets cuDNN run convolutions on tensor cores without layout transposes (about 1.2-1.5x on a
    ResNet-50 in bf16); a ViT's time is in matmuls over (tokens, channels), which the layout does not touch.
    """
    import torch

    return sum(isinstance(m, torch.nn.Conv2d) for m in module.modules()) > 1


class TorchEncoder(Encoder):
    """Wraps a torch module that maps normalized (N, 3, H, W) floats to (N, C) features."""

    def __init__(self, name: str, module, dim: int, mean: tuple[float, ...], std: tuple[float, ...],
                 spec: EncoderSpec, digest: str) -> None:
        import torch

        self.name = name
        self.dim = dim
        self._digest = digest
        self._device = torch.device(spec.device)
        self._amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.amp) if spec.device == "cuda" else None
        self._module = module.eval().to(self._device)
        self.channels_last = spec.device == "cuda" and convolutional(self._module)
        if self.channels_last:
            self._module = self._module.to(memory_format=torch.channels_last)
        # Compiled lazily on the first batch; `max_batch` then fixes the one shape it sees (chunks are padded).
        self.compiled = bool(spec.torch_compile)
        self._forward = torch.compile(self._module, dynamic=False) if self.compiled else self._module
        self._mean = torch.tensor(mean, device=self._device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, device=self._device).view(1, 3, 1, 1) * 255.0
        # Tiles per forward pass (None: a batch in one pass); the encode actor sets it (--batch-size, or probed).
        self.max_batch: int | None = None
        self.probe: dict[int, float] = {}  # tiles/s per chunk size tried by fit_batch

    @property
    def weights_digest(self) -> str:
        """Digest of the loaded weights."""
        return self._digest

    def _run(self, x, eager: bool = False):
        """(N, H, W, 3) uint8 tiles on the device → (N, dim) float32 embeddings on the device."""
        import torch

        x = x.permute(0, 3, 1, 2).float().sub_(self._mean).div_(self._std)
        if self._device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        forward = self._module if eager else self._forward
        if self._amp is not None:
            with torch.autocast("cuda", dtype=self._amp):
                out = forward(x)
        else:
            out = forward(x)
        return out.float().flatten(1)

    def _chunk(self, tiles: np.ndarray):
        import torch

        k = len(tiles)
        if self.compiled and self.max_batch and k < self.max_batch:
            # One shape for the compiled graph: the short last chunk is padded rather than compiled again.
            tiles = np.concatenate([tiles, np.zeros((self.max_batch - k, *tiles.shape[1:]), tiles.dtype)])
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self._device, non_blocking=True)
        return self._run(x)[:k]

    def encode(self, tiles: np.ndarray) -> np.ndarray:
        """Normalize on the device (uint8 goes over the bus, not float32) and run the module, `max_batch` tiles
        at a time; a chunk that runs out of GPU memory is halved (and stays halved) instead of failing."""
        import torch

        n = len(tiles)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        outs, i = [], 0
        with torch.inference_mode():
            while i < n:
                step = min(self.max_batch or n, n)
                try:
                    outs.append(self._chunk(tiles[i:i + step]))
                except torch.cuda.OutOfMemoryError:
                    if self._device.type != "cuda" or step == 1:
                        raise
                    self.max_batch = step // 2
                    log.warning("%s: %d tiles do not fit in GPU memory; %d per forward pass from now on",
                                self.name, step, self.max_batch)
                    torch.cuda.empty_cache()
                    continue
                i += step
            return torch.cat(outs).cpu().numpy()

    def fit_batch(self, tile_size: int, cap: int, start: int = 8, gain: float = 1.05, reps: int = 2) -> int:
        """Probe the chunk size that fills the device and set `max_batch` to it: powers of two from `start` up to
        `cap`, doubling while the chunk fits in memory and runs at least `gain` x the tiles/s of the one before.
        A chunk past that point only costs memory (and, on a shared GPU, room for others). Random tiles, the
        eager module, a warm-up and `reps` timed passes per size: a few seconds for a ViT-L on one GPU."""
        import torch

        b = best = max(1, min(start, cap))
        best_rate = 0.0
        with torch.inference_mode():
            while b <= cap:
                x = None
                try:
                    x = torch.randint(0, 256, (b, tile_size, tile_size, 3), dtype=torch.uint8, device=self._device)
                    self._run(x, eager=True)  # allocations, kernel selection
                    self._sync()
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        self._run(x, eager=True)
                    self._sync()
                    rate = reps * b / max(time.perf_counter() - t0, 1e-9)
                except torch.cuda.OutOfMemoryError:
                    break
                finally:
                    del x
                    if self._device.type == "cuda":
                        torch.cuda.empty_cache()
                self.probe[b] = rate
                if rate < best_rate * gain:
                    break
                best, best_rate = b, rate
                b *= 2
        self.max_batch = best
        log.info("%s: %d tiles per forward pass (probed tiles/s: %s)", self.name, best,
                 ", ".join(f"{k}: {v:.0f}" for k, v in self.probe.items()))
        return best

    def _sync(self) -> None:
        import torch

        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
