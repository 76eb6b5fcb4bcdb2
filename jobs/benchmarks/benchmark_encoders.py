"""Benchmark: learned tile encoders — training tiles/s per method with 1 and 2 Ray Train workers, and NIC's
Table 1 (a linear probe on frozen embeddings, tumour vs non-tumour patches) beside mean-RGB and random weights.

    python jobs/benchmarks/benchmark_encoders.py [--quick] [--out DIR]

One run: synthetic archives (one to train the encoders on, another for the probe, so that the supervised
encoder never saw the probe's labels), `run_train_encoder` per method and worker count (Ray Data tile stream, Ray
Train; tiles/s of the last epoch), then the probe on the 1-worker encoders. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import _bootstrap  # noqa: F401
from slidegrid.encoders.learned import METHODS

# --quick: 32-px tiles at 1 µm/px, C = 32 (minutes on a laptop CPU); full: NIC's P = 128 at 0.5 µm/px, C = 128.
SETTINGS = {
    True: {"slides": 8, "size": 2048, "tile_size": 32, "mpp": 1.0, "code_size": 32, "width": 16, "depth": 3,
           "tiles": 1024, "epochs": 4, "batch_size": 32, "probe_per_class": 150},
    False: {"slides": 16, "size": 4096, "tile_size": 128, "mpp": 0.5, "code_size": 128, "width": 32, "depth": 4,
            "tiles": 4096, "epochs": 5, "batch_size": 64, "probe_per_class": 200},
}


def train_row(root: str, method: str, workers: int, s: dict) -> tuple[dict, str]:
    """Train one encoder; its last epoch's throughput and loss, and the encoder file."""
    from slidegrid.geometry.tiling import GridSpec
    from slidegrid.train.encoder.config import EncoderTrainConfig
    from slidegrid.train.encoder.fit import run_train_encoder
    from slidegrid.train.runner import plan_training

    cfg = EncoderTrainConfig(input=os.path.join(root, "train", "cohort.csv"),
                             out=os.path.join(root, f"{method}-{workers}"), method=method,
                             code_size=s["code_size"], grid=GridSpec(tile_size=s["tile_size"], mpp=s["mpp"],
                                                                      min_tissue=0.5), width=s["width"],
                             depth=s["depth"], epochs=s["epochs"], tiles=s["tiles"], batch_size=s["batch_size"],
                             workers=workers, mlflow=False)
    per_worker = plan_training(cfg, reads=True).cpus_per_worker  # what run_train_encoder plans (placement.py)
    result = run_train_encoder(cfg)
    first, last = result.history[0], result.history[-1]
    return {"method": method, "workers": workers, "cpus_per_worker": per_worker, "tiles_per_epoch": last["tiles"],
            "epoch_s": last["epoch_seconds"], "tiles_per_s": last["tiles_per_s"], "loss_first": first["train_loss"],
            "loss_last": last["train_loss"]}, result.encoder_file


def probe_rows(root: str, files: dict[str, str], s: dict) -> list[dict]:
    """Probe accuracy of mean-RGB and of each method's trained and untrained (same-seed) encoder."""
    import torch

    from slidegrid.encoders import EncoderSpec
    from slidegrid.encoders.learned import as_encoder, embedder_from_meta, load_encoder_file
    from slidegrid.encoders.mean_rgb import MeanRGBEncoder
    from slidegrid.encoders.probe import probe_encoders, probe_set

    data = probe_set(os.path.join(root, "probe", "cohort.csv"), s["tile_size"], s["mpp"],
                     per_class=s["probe_per_class"])
    encoders = {"mean-rgb": MeanRGBEncoder()}
    for method, path in files.items():
        embedder, digest = load_encoder_file(path, method)
        encoders[method] = as_encoder(embedder.eval(), EncoderSpec(method), digest)
        torch.manual_seed(0)
        encoders[f"{method} (random weights)"] = as_encoder(embedder_from_meta(embedder.meta).eval(),
                                                            EncoderSpec(method), "random")
    acc = probe_encoders(encoders, data)
    return [{"encoder": k, "dim": v.dim, "accuracy": acc[k], "vs_mean_rgb": acc[k] - acc["mean-rgb"],
             "patches": len(data.labels)} for k, v in encoders.items()]


def main() -> None:
    """Run everything once and print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small archive, 32-px tiles, C = 32 (a few minutes)")
    p.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args()
    s = SETTINGS[args.quick]
    root = args.out or tempfile.mkdtemp(prefix="bench-encoders-")

    from slidegrid.runtime import init_ray
    from slidegrid.synth.slides import synthesize_archive

    # Three tumours per tumour slide: enough whole-tumour tiles for a probe of a few hundred patches.
    synthesize_archive(os.path.join(root, "train"), s["slides"], size=s["size"], seed=1, tumours=(3, 3),
                       progress=False)
    synthesize_archive(os.path.join(root, "probe"), max(4, s["slides"] // 2), size=s["size"], seed=2,
                       tumours=(3, 3), progress=False)
    cpus = float(init_ray().get("CPU", 1))
    rows, files = [], {}
    for method in args.methods.split(","):
        for workers in (1, 2):
            row, path = train_row(root, method, workers, s)
            rows.append(row)
            if workers == 1:
                files[method] = path
    print(f"\nsettings: {s}, cluster CPUs: {cpus:g}\n")
    print("| method | workers | CPUs/worker | tiles/epoch | epoch (s) | tiles/s | loss, first → last epoch |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['workers']} | {r['cpus_per_worker']:.2g} | {r['tiles_per_epoch']} | "
              f"{r['epoch_s']:.1f} | {r['tiles_per_s']:.0f} | {r['loss_first']:.4g} → {r['loss_last']:.4g} |")
    probe = probe_rows(root, files, s)
    print(f"\nlinear probe, tumour vs non-tumour, {probe[0]['patches']} stain-varied patches, held-out slides\n")
    print("| encoder | C | accuracy | vs mean-RGB |")
    print("|---|---|---|---|")
    for r in probe:
        print(f"| {r['encoder']} | {r['dim']} | {r['accuracy']:.3f} | {r['vs_mean_rgb']:+.3f} |")


if __name__ == "__main__":
    main()
