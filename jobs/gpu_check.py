"""GPU check: slidegrid's GPU paths on one GPU, in one process, in at most five minutes; prints one table.

    python jobs/gpu_check.py                       # on a GPU machine: ViT-L (UNI) + ResNet-50, bf16
    python jobs/gpu_check.py --device cpu --tiny   # what tests/jobs/test_gpu_check.py runs: tiny models, seconds

Rows:
  encode      the encode actor (`slidegrid.encode.EncodeActor`, as Ray Data runs it, here called in-process)
              on random uint8 tiles made with numpy: the `uni` preset (ViT-L/16, random weights) and
              `timm:resnet50`, bf16 autocast, `--batch-size auto` (the actor probes the chunk that fills the
              GPU), batches of encode.AUTO_BATCH tiles; tiles/s, GPU busy % (`nvidia-smi`, sampled in a
              background thread), peak GPU memory;
  encode      the same ViT-L with torch.compile (`--compile`), in a child process bounded by the time left;
  aggregate   two training steps of the attention aggregator built as train/aggregator/loop.py builds it;
  segment     a forward pass of a tiny DigiPathAI member (U-Net, ResNet-18 encoder, segmentation-models-pytorch)
              and of a tiny MRN (plain torch).
A final row checks that no Ray, MLflow, tiffslide or imagecodecs module was imported.

It needs only what a bare GPU machine has: torch, timm, numpy and the libraries slidegrid's imported modules
use (pandas, pyarrow, scikit-image, opencv, scipy, fsspec, pyyaml). segmentation-models-pytorch is pure Python:
where it is not installed, carry it as a zip (`--pack-smp build/gpu_check/smp.zip` on a machine that has it,
then `--extra-path build/gpu_check/smp.zip` on the GPU machine), else its row says it was skipped.
Exit status 1 when a row failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FORBIDDEN = ("ray", "mlflow", "tiffslide", "imagecodecs")
SMP_MISSING = "skipped: segmentation-models-pytorch not installed"
TINY_PRESET = "gpu-check-vit-tiny"


# -- GPU busy % ------------------------------------------------------------------------------------------------

class GpuBusy:
    """Samples `nvidia-smi`'s utilization.gpu (% of time a kernel ran) for one GPU in a background thread."""

    def __init__(self, gpu_ids: list[str], interval: float = 0.25) -> None:
        self.gpu_ids, self.interval = gpu_ids, interval
        self.gpu_id: str | None = None
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _query(self) -> float | None:
        try:
            out = subprocess.run(["nvidia-smi", f"--id={self.gpu_id}", "--query-gpu=utilization.gpu",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
            return float(out.stdout.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            v = self._query()
            if v is not None:
                self.samples.append(v)
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuBusy:
        for candidate in self.gpu_ids:  # the UUID first; an index where this nvidia-smi does not take it
            self.gpu_id = candidate
            if self._query() is not None:
                break
        else:
            self.gpu_id = None
        if self.gpu_id is not None:
            self._thread = threading.Thread(target=self._run, name="gpu-busy", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def gpu_ids(device: str) -> list[str]:
    """The GPU torch uses, as `nvidia-smi --id` may take it: its UUID, else its index."""
    import torch

    if device != "cuda":
        return []
    ids = []
    uuid = getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "uuid", None)
    if uuid is not None:
        ids.append(str(uuid) if str(uuid).startswith("GPU-") else f"GPU-{uuid}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    ids.append(visible or str(torch.cuda.current_device()))
    return ids


# -- rows ------------------------------------------------------------------------------------------------------

def row(check: str, model: str, setting: str = "-", batch: str = "-", throughput: str = "-", busy: str = "-",
        memory: str = "-", result: str = "ok") -> dict:
    return {"check": check, "model": model, "setting": setting, "batch": batch, "throughput": throughput,
            "busy": busy, "memory": memory, "result": result}


def _peak_reset(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> str:
    import torch

    return f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device == "cuda" else "-"


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def tiny_preset():
    """A two-block ViT registered as a preset: the test's stand-in for the ViT-L (same code path, seconds)."""
    from slidegrid.encoders.preset import PRESETS, Preset, register_preset

    if TINY_PRESET not in PRESETS:
        register_preset(Preset(
            name=TINY_PRESET, family="gpu-check", hf_repo=None, arch="vit_small_patch16_224", dim=32, tile_size=32,
            mpp=0.5, licence="-", gated=False, params_m=0.03, sources=("jobs/gpu_check.py",), input_size=32,
            kwargs=lambda: dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, init_values=1e-5,
                                dynamic_img_size=True)))
    return PRESETS[TINY_PRESET]


def ensure_buildable(name: str) -> None:
    """Let `build_encoder` build preset `name` with random weights in this process.

    Presets resolve through the encoder registry (encoders/preset_encoder.py); where that is not in this
    checkout, the preset is registered here as TorchEncoder(preset module) with seeded random weights.
    """
    import importlib.util

    from slidegrid.encoders import register
    from slidegrid.encoders.preset import find_preset

    preset = find_preset(name) if name != TINY_PRESET else tiny_preset()
    if preset is None or importlib.util.find_spec("slidegrid.encoders.preset_encoder") is not None:
        return

    def factory(spec):
        import torch

        from slidegrid.encoders.preset import build_backbone, preset_module
        from slidegrid.encoders.torch_encoder import TorchEncoder

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = preset_module(preset, build_backbone(preset))
        return TorchEncoder(name, module, preset.dim, preset.mean, preset.std, spec, "random:seed0")

    register(name, factory)


def encode_row(label: str, encoder: str, args: argparse.Namespace, compile_: bool = False) -> dict:
    """The encode actor on `AUTO_BATCH` random tiles per call for `args.seconds`."""
    from slidegrid.encode import AUTO_BATCH, EncodeActor
    from slidegrid.encoders import EncoderSpec

    ensure_buildable(encoder)
    dev = args.device
    tile = args.tile_size
    _peak_reset(dev)
    t0 = time.perf_counter()
    actor = EncodeActor(EncoderSpec(encoder, "random", dev, args.amp, compile_), "float16", None,
                        batch_size=args.batch_size, tile_size=tile)
    built = time.perf_counter() - t0
    n = AUTO_BATCH[dev] if args.batch_size == "auto" else int(args.batch_size)
    n = min(n, args.max_tiles)
    tiles = np.random.default_rng(0).integers(0, 256, (n, tile, tile, 3), dtype=np.uint8)

    def call() -> np.ndarray:
        return actor({"image": tiles, "index": np.arange(n)})["embedding"]

    t0 = time.perf_counter()
    out = call()  # warm-up (and compilation)
    first = time.perf_counter() - t0
    if out.shape != (n, actor.encoder.dim) or not np.isfinite(out.astype(np.float32)).all():
        raise RuntimeError(f"embeddings of shape {out.shape}, finite: {np.isfinite(out).all()}")
    _peak_reset(dev)
    done = 0
    with GpuBusy(gpu_ids(dev)) as busy:
        t0 = time.perf_counter()
        while done == 0 or time.perf_counter() - t0 < args.seconds:
            call()
            done += n
        secs = time.perf_counter() - t0
    enc = actor.encoder
    how = "probed" if args.batch_size == "auto" and dev == "cuda" else "--batch-size"
    setting = (f"{args.amp if dev == 'cuda' else 'fp32'}, channels-last {'yes' if enc.channels_last else 'no'}, "
               f"compile {'yes' if compile_ else 'no'}; built {built:.1f} s, first batch {first:.1f} s")
    result = row("encode", label, setting, f"{n} per call, {actor.chunk} per pass ({how})",
                 f"{done / secs:.1f} tiles/s", f"{busy.mean:.0f}" if busy.mean is not None else "-", _peak_gb(dev))
    actor = enc = None  # freed before the next row
    _free(dev)
    return result


def aggregate_row(args: argparse.Namespace) -> dict:
    """Two optimizer steps of the attention aggregator (train/aggregator/loop.build and its loss) on a random grid."""
    import torch

    from slidegrid.train.aggregator.config import TrainConfig
    from slidegrid.train.aggregator.data import CohortExamples
    from slidegrid.train.aggregator.loop import _loss, build

    dev = args.device
    dim, side = (32, 16) if args.tiny else (1024, 128)  # UNI's 1024-d embeddings, a 128 x 128-tile slide
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(grids=d, cohort=os.path.join(d, "cohort.csv"), out=d, model="attention")
    data = CohortExamples((), ("normal", "tumour"), dim)
    torch.manual_seed(0)
    model, opt, _ = build(cfg, data, (np.zeros(dim), np.ones(dim)))
    model.to(dev).train()
    x = torch.randn(1, dim, side, side, device=dev)
    mask = torch.rand(1, side, side, device=dev) > 0.3
    target = torch.tensor([1], device=dev)
    before = [p.detach().clone() for p in model.parameters()]
    _peak_reset(dev)
    losses, t0 = [], time.perf_counter()
    for _ in range(2):
        opt.zero_grad()
        loss = _loss(cfg, model(x, mask), target)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    secs = time.perf_counter() - t0
    moved = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if not (np.isfinite(losses).all() and moved):
        raise RuntimeError(f"losses {losses}, parameters updated: {moved}")
    result = row("aggregate", "attention (train/aggregator/loop.build)", f"fp32, grid {dim} x {side} x {side}", "1 slide",
                 f"{secs / 2 * 1000:.0f} ms/step", "-", _peak_gb(dev),
                 f"ok (2 steps, loss {losses[0]:.3f} -> {losses[1]:.3f})")
    del model, opt, x
    _free(dev)
    return result


def segment_rows(args: argparse.Namespace) -> list[dict]:
    """Forward passes of a tiny smp ensemble member and a tiny MRN through the model registry."""
    import torch

    from slidegrid.models import build_model

    dev = args.device
    side, batch = (64, 2) if args.tiny else (512, 8)
    amp = args.amp != "off" and dev == "cuda"
    dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16
    out = []
    members = [("unet-densenet121", "U-Net, ResNet-18 encoder, depth 3 (smp)",
                dict(encoder="resnet18", encoder_depth=3), (batch, 3, side, side)),
               ("mrn-bilinear", "MRN-bilinear, 2 resolutions, width 8, depth 2",
                dict(n_resolutions=2, width=8, depth=2), (batch, 2, 3, side, side))]
    for name, label, kwargs, shape in members:
        try:
            model = build_model(name, 3, 2, **kwargs)
        except ImportError as exc:
            if "segmentation_models_pytorch" not in str(exc):
                raise
            out.append(row("segment", f"{name}: {label}", result=SMP_MISSING))
            continue
        model.to(dev).eval()
        x = torch.rand(*shape, device=dev)
        _peak_reset(dev)
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=amp):
            y = model(x)  # warm-up
            if dev == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            y = model(x)
            if dev == "cuda":
                torch.cuda.synchronize()
            secs = time.perf_counter() - t0
        if tuple(y.shape) != (batch, 2, side, side) or not torch.isfinite(y.float()).all():
            raise RuntimeError(f"{name}: logits of shape {tuple(y.shape)}")
        note = "ok"
        if name.startswith("unet"):
            import segmentation_models_pytorch as smp

            note = f"ok (smp {smp.__version__})"
        out.append(row("segment", f"{name}: {label}", f"{args.amp if amp else 'fp32'}, {side} px", f"{batch} tiles",
                       f"{batch / secs:.1f} tiles/s", "-", _peak_gb(dev), note))
        del model, x, y
        _free(dev)
    return out


def compile_row(args: argparse.Namespace, budget_s: float) -> dict:
    """The compiled encoder row in a child process, killed when the time left runs out (compilation cannot be
    interrupted in-process)."""
    label = "uni (ViT-L/16), torch.compile" if not args.tiny else f"{TINY_PRESET}, torch.compile"
    cmd = [sys.executable, os.path.abspath(__file__), "--child-compile", "--device", args.device,
           "--seconds", str(args.seconds), "--batch-size", str(args.batch_size), "--amp", args.amp,
           "--max-tiles", str(args.max_tiles), *(["--tiny"] if args.tiny else [])]
    for p in args.extra_path:
        cmd += ["--extra-path", p]
    if budget_s < 30:
        return row("encode", label, result=f"skipped: {budget_s:.0f} s of the time budget left")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        return row("encode", label, result=f"skipped: not compiled and measured within the {budget_s:.0f} s left")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        return row("encode", label, result="FAIL: " + (proc.stderr.strip().splitlines() or ["no output"])[-1][:200])
    return json.loads(line[7:])


def imports_row() -> dict:
    loaded = [m for m in FORBIDDEN if m in sys.modules]
    return row("imports", "slidegrid modules used above", f"none of {', '.join(FORBIDDEN)}",
               result="ok" if not loaded else f"FAIL: imported {', '.join(loaded)}")


def pack_smp(path: str) -> None:
    """Zip the installed segmentation-models-pytorch (pure Python) for --extra-path on a machine without it."""
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("segmentation_models_pytorch")  # located, not imported (seconds)
    if spec is None or not spec.origin:
        raise SystemExit("segmentation-models-pytorch is not installed here")
    site = os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    base = path[:-4] if path.endswith(".zip") else path
    print(shutil.make_archive(base, "zip", site, "segmentation_models_pytorch"))


# -- main ------------------------------------------------------------------------------------------------------

def _guarded(fn, label: str, *a) -> list[dict]:
    try:
        res = fn(*a)
        return res if isinstance(res, list) else [res]
    except Exception as exc:  # one failed row, the table still prints
        return [row(label.split(":")[0], label.split(":", 1)[-1].strip(), result=f"FAIL: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny models and tiles (the CPU test)")
    p.add_argument("--only", action="append", choices=["encode", "compile", "aggregate", "segment"],
                   help="run only these rows (repeatable; default: all)")
    p.add_argument("--seconds", type=float, default=None, help="timed seconds per encoder (default 15, tiny 0.3)")
    p.add_argument("--batch-size", default="auto", help="encode --batch-size (default auto)")
    p.add_argument("--amp", choices=["bf16", "fp16", "off"], default="bf16")
    p.add_argument("--budget", type=float, default=280.0, help="seconds the whole check may take (default 280)")
    p.add_argument("--max-tiles", type=int, default=512, help="at most this many tiles per actor call")
    p.add_argument("--extra-path", action="append", default=[], help="folder or zip put first on sys.path "
                   "(e.g. a zip of segmentation-models-pytorch made with --pack-smp)")
    p.add_argument("--pack-smp", metavar="ZIP", help="write the installed segmentation-models-pytorch to ZIP, exit")
    p.add_argument("--child-compile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    for path in reversed(args.extra_path):
        sys.path.insert(0, os.path.abspath(path))
    if args.pack_smp:
        pack_smp(args.pack_smp)
        return 0
    if args.batch_size != "auto":
        args.batch_size = int(args.batch_size)
    if args.seconds is None:
        args.seconds = 0.3 if args.tiny else 15.0
    args.tile_size = 32 if args.tiny else 224
    if args.tiny:
        args.max_tiles = min(args.max_tiles, 64)

    import torch

    import _bootstrap  # noqa: F401  (slidegrid from platform/ without installing it)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (use --device cpu --tiny for the CPU check)", file=sys.stderr)
        return 2
    vit, cnn = (TINY_PRESET, "timm:resnet18") if args.tiny else ("uni", "timm:resnet50")
    if args.child_compile:
        print("RESULT " + json.dumps(encode_row(f"{vit}, torch.compile", vit, args, compile_=True)))
        return 0

    t_start = time.perf_counter()
    only = set(args.only or ["encode", "compile", "aggregate", "segment"])
    if args.device == "cpu" and not args.only:
        only.discard("compile")  # minutes of C++ compilation on a CPU; ask for it with --only compile
    rows: list[dict] = []
    if "encode" in only:
        vit_label = "uni (ViT-L/16, random weights)" if not args.tiny else f"{TINY_PRESET} (2-block ViT)"
        rows += _guarded(encode_row, f"encode: {vit}", vit_label, vit, args)
        rows += _guarded(encode_row, f"encode: {cnn}", f"{cnn} (random weights)", cnn, args)
    if "aggregate" in only:
        rows += _guarded(aggregate_row, "aggregate: attention", args)
    if "segment" in only:
        rows += _guarded(segment_rows, "segment: members", args)
    if "compile" in only:
        _free(args.device)
        rows += _guarded(compile_row, f"encode: {vit} compiled", args, args.budget - (time.perf_counter() - t_start))
    rows.append(imports_row())
    total = time.perf_counter() - t_start

    import timm

    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{name}; torch {torch.__version__}, CUDA {torch.version.cuda or '-'}, timm {timm.__version__}; "
          f"{total:.0f} s in all\n")
    print("| check | model | setting | batch | throughput | GPU busy % | peak GPU memory (GiB) | result |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['check']} | {r['model']} | {r['setting']} | {r['batch']} | {r['throughput']} | {r['busy']} | "
              f"{r['memory']} | {r['result']} |")
    return 1 if any(r["result"].startswith("FAIL") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
