"""jobs/gpu_check.py on CPU with tiny models, as a bare GPU machine would run it (no Ray, MLflow, tiffslide,
imagecodecs or segmentation-models-pytorch), and the GPU path of TorchEncoder it measures (chunking, the
batch-size probe, the out-of-memory fallback, channels-last, compile padding) without a GPU."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "jobs" / "gpu_check.py"

# Runs the script with these packages unimportable, except segmentation-models-pytorch from the zip in SMP_ZIP.
_BLOCKED_RUN = """
import importlib.abc, importlib.machinery, os, runpy, sys
BLOCK = {"ray", "mlflow", "tiffslide", "imagecodecs", "openslide", "segmentation_models_pytorch"}
ZIP = os.environ.get("SMP_ZIP")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top not in BLOCK:
            return None
        if top == "segmentation_models_pytorch" and ZIP:
            return importlib.machinery.PathFinder.find_spec(name, path or [ZIP])
        raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Block())
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", _BLOCKED_RUN, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=240, cwd=ROOT, env={**os.environ, **(env or {})})


def _table(stdout: str) -> list[list[str]]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]


def test_gpu_check_tiny_on_cpu_without_ray_mlflow_or_smp():
    proc = _run("--device", "cpu", "--tiny")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _table(proc.stdout)
    assert [r[0] for r in rows] == ["encode", "encode", "aggregate", "segment", "segment", "imports"]
    for r in rows[:2]:
        assert re.fullmatch(r"\d+\.\d tiles/s", r[4]) and r[-1] == "ok", r
    assert rows[0][1].startswith("gpu-check-vit-tiny") and "timm:resnet18" in rows[1][1]
    assert "64 per pass" in rows[0][3]
    assert re.fullmatch(r"\d+ ms/step", rows[2][4]) and rows[2][-1].startswith("ok (2 steps")
    assert rows[3][-1] == "skipped: segmentation-models-pytorch not installed"
    assert rows[4][1].startswith("mrn-bilinear") and rows[4][-1] == "ok"
    assert rows[5][-1] == "ok"


def test_gpu_check_segmentation_member_from_a_carried_smp_zip(tmp_path):
    zipped = tmp_path / "smp.zip"
    pack = subprocess.run([sys.executable, str(SCRIPT), "--pack-smp", str(zipped)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert pack.returncode == 0 and zipped.exists(), pack.stderr[-2000:]
    proc = _run("--device", "cpu", "--tiny", "--only", "segment", "--extra-path", str(zipped),
                env={"SMP_ZIP": str(zipped)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _table(proc.stdout)
    assert rows[0][1].startswith("unet-densenet121") and rows[0][-1].startswith("ok (smp ")


# -- TorchEncoder's GPU path, exercised on CPU ----------------------------------------------------------------

class _Tiny(torch.nn.Module):
    """(N, 3, H, W) → (N, 4): one convolution (like a ViT's patch embedding) and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 4, 4, stride=4)
        self.head = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.head(self.embed(x).mean((2, 3)))


def _encoder(**spec):
    from slidegrid.encoders.base import EncoderSpec
    from slidegrid.encoders.torch_encoder import TorchEncoder

    torch.manual_seed(0)
    return TorchEncoder("tiny", _Tiny(), 4, (0.5,) * 3, (0.25,) * 3, EncoderSpec("tiny", "random", **spec), "d")


def _tiles(n: int, side: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_chunks_give_the_embeddings_of_one_pass():
    enc, tiles = _encoder(), _tiles(37)
    whole = enc.encode(tiles)
    enc.max_batch = 8
    np.testing.assert_allclose(enc.encode(tiles), whole, rtol=1e-5, atol=1e-6)
    assert enc.encode(tiles[:0]).shape == (0, 4)


def test_fit_batch_stops_at_the_first_size_that_does_not_fit(monkeypatch):
    enc = _encoder()
    run = enc._run

    def run_or_oom(x, eager=False):
        if len(x) > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return run(x, eager)

    monkeypatch.setattr(enc, "_run", run_or_oom)
    assert enc.fit_batch(8, 512, start=2, gain=0.0) == 16 and enc.max_batch == 16
    assert sorted(enc.probe) == [2, 4, 8, 16]
    assert _encoder().fit_batch(8, 4, start=8) == 4  # never above the cap


def test_encode_halves_the_chunk_when_the_gpu_runs_out_of_memory(monkeypatch):
    enc, tiles = _encoder(), _tiles(40)
    whole = enc.encode(tiles)
    chunk = _encoder()._chunk  # same weights, on the real device
    sizes = []

    def chunk_or_oom(t):
        sizes.append(len(t))
        if len(t) > 10:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return chunk(t)

    monkeypatch.setattr(enc, "_chunk", chunk_or_oom)
    monkeypatch.setattr(enc, "_device", types.SimpleNamespace(type="cuda"))  # what the fallback checks
    enc.max_batch = 32
    np.testing.assert_allclose(enc.encode(tiles), whole, rtol=1e-5, atol=1e-6)
    assert enc.max_batch == 8 and sizes[:3] == [32, 16, 8]
    monkeypatch.setattr(enc, "_device", torch.device("cpu"))  # on CPU the error is not hidden
    with pytest.raises(torch.cuda.OutOfMemoryError):
        enc.max_batch = 16
        enc.encode(tiles)


def test_compiled_encoder_pads_every_chunk_to_one_shape(monkeypatch):
    shapes = []

    def fake_compile(module, dynamic=None):
        assert dynamic is False

        def forward(x):
            shapes.append(tuple(x.shape))
            return module(x)

        return forward

    monkeypatch.setattr(torch, "compile", fake_compile)
    enc, tiles = _encoder(torch_compile=True), _tiles(21)
    enc.max_batch = 8
    out = enc.encode(tiles)
    assert set(shapes) == {(8, 3, 8, 8)} and len(shapes) == 3
    np.testing.assert_allclose(out, _encoder().encode(tiles), rtol=1e-5, atol=1e-6)


def test_channels_last_for_convnets_only():
    import timm

    from slidegrid.encoders.torch_encoder import convolutional

    assert convolutional(timm.create_model("resnet18", pretrained=False, num_classes=0))
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, depth=1, img_size=32)
    assert not convolutional(vit)
    assert not _encoder().channels_last  # on CPU never


def test_encode_actor_chunk_follows_batch_size():
    from slidegrid.encode import AUTO_BATCH, EncodeActor
    from slidegrid.encoders import EncoderSpec

    auto = EncodeActor(EncoderSpec("timm:resnet18", "random"), "float16", None, batch_size="auto", tile_size=32)
    assert auto.chunk == AUTO_BATCH["cpu"] == auto.encoder.max_batch
    fixed = EncodeActor(EncoderSpec("timm:resnet18", "random"), "float16", None, batch_size=24, tile_size=32)
    assert fixed.encoder.max_batch == 24
    batch = {"image": _tiles(30, 32), "index": np.arange(30)}
    out = fixed(batch)
    assert out["embedding"].shape == (30, 512) and out["embedding"].dtype == np.float16 and "image" not in out


def test_batch_size_is_a_positive_integer_or_auto(tmp_path):
    from slidegrid.encode import EncodeConfig
    from slidegrid.errors import ConfigError

    assert EncodeConfig(str(tmp_path), str(tmp_path / "g")).batch_size == "auto"
    assert EncodeConfig(str(tmp_path), str(tmp_path / "g"), batch_size=32, torch_compile=True).batch_size == 32
    for bad in (0, "many", 2.5):
        with pytest.raises(ConfigError, match="--batch-size"):
            EncodeConfig(str(tmp_path), str(tmp_path / "g"), batch_size=bad)
