"""Running any torch module as a tile encoder: normalization, channels-last, AMP on GPU, no grad."""

from __future__ import annotations

import numpy as np

from .base import Encoder, EncoderSpec


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
        if spec.device == "cuda":
            self._module = self._module.to(memory_format=torch.channels_last)
        self._mean = torch.tensor(mean, device=self._device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, device=self._device).view(1, 3, 1, 1) * 255.0

    @property
    def weights_digest(self) -> str:
        """Digest of the loaded weights."""
        return self._digest

    def encode(self, tiles: np.ndarray) -> np.ndarray:
        """Normalize on the device (uint8 goes over the bus, not float32) and run the module."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self._device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).float().sub_(self._mean).div_(self._std)
            if self._device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            if self._amp is not None:
                with torch.autocast("cuda", dtype=self._amp):
                    out = self._module(x)
            else:
                out = self._module(x)
            return out.float().flatten(1).cpu().numpy()
