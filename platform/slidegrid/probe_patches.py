"""`slidegrid probe`: how well an encoder's frozen embeddings tell the classes of a labelled patch set apart
(PatchCamelyon: tumour / normal), beside the same network with random weights.

    patch files ─► decode (Ray Data CPU tasks) ─► EncodeActor pool (encode's actors and placement) ─► embeddings
               ─► linear probe (standardized logistic regression) and k-NN, fitted on the train split only
               ─► accuracy, balanced accuracy, AUC on the test split, 95% bootstrap CIs over its patches
               ─► table (terminal), probe-<encoder>.csv / .json under --out, one MLflow run

The random-weights twin is the control: the same architecture, seed-0 weights, never trained (timm: and preset
encoders: `--weights random`; learned encoders: their own geometry, written beside the results, see
encoders.learned.save_random_twin). A weightless encoder (mean-rgb) or one whose weights are random already has
no twin row. Patches reach the encoder as they are: a preset resizes them to its input inside its module, as it
does for slide tiles; a learned encoder, whose network has one input size, is refused on patches of another
size or pixel size.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .encode import AUTO_BATCH, EncodeActor, EncoderCheck, check_encoder
from .encoders import EncoderSpec, check_encoder_name
from .encoders.learned import METHODS as LEARNED_METHODS
from .encoders.patches import PatchSet, check_mpp, decode_patch, decode_patches, read_patch_set
from .encoders.preset import find_preset
from .encoders.probe import knn_probe_scores, linear_probe_scores, probe_metrics
from .errors import ConfigError

log = logging.getLogger(__name__)

# Patches per decode task: big enough to amortize a task's overhead, small enough to spread over the CPUs.
DECODE_CHUNK = 256
METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "auc": "AUC"}


@dataclass(frozen=True)
class ProbeConfig:
    """Everything `slidegrid probe` takes; validated on construction."""

    patches: str  # a patch folder or CSV table (encoders/patches.py)
    mpp: float | None = None  # µm/px of the patches (required, checked with a clear error; PCam 0.97)
    encoder: str = "mean-rgb"
    weights: str | None = None
    out: str = "slidegrid-probe"
    train_split: str = "train"
    test_split: str = "test"
    k: int = 20  # k-NN neighbours (DINO's and UNI's k-NN evaluations use 20)
    random_twin: bool = True
    bootstrap_reps: int = 1000
    batch_size: int | str = "auto"  # patches per encoder batch (encode's AUTO_BATCH)
    actors: int | None = None
    data_cpus: float | None = None
    amp: str = "bf16"
    tracking_uri: str | None = None
    mlflow: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        check_mpp(self.mpp)
        check_encoder_name(self.encoder)
        if self.k < 1:
            raise ConfigError("--k", "must be a positive integer")
        if self.train_split == self.test_split:
            raise ConfigError("--test-split", f"is the training split {self.train_split!r}: a probe scored on the "
                                              "patches it was fitted on measures nothing")
        if self.bootstrap_reps < 100:
            raise ConfigError("--bootstrap-reps", "needs at least 100 resamples for a 95% interval")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigError("--batch-size", "must be a positive integer or auto")
        if self.amp not in ("bf16", "fp16", "off"):
            raise ConfigError("--amp", f"{self.amp!r} is not bf16, fp16 or off")

    @property
    def slug(self) -> str:
        """The encoder's name as a file name part (timm:resnet18 -> timm-resnet18)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.encoder).strip("-")


@dataclass
class ProbeReport:
    """What a probe run measured: one row per (encoder or twin, probe) with its metrics and CIs."""

    rows: list[dict[str, Any]]
    dataset: dict[str, Any]
    notes: list[str]
    seconds: float
    tables: dict[str, str] = field(default_factory=dict)  # file name -> URI
    run_id: str | None = None
    tracking_uri: str | None = None


# -- encoding: encode's actor class and placement over a Ray Data dataset of patch files ------------------------

def _decode_rows(batch: dict[str, np.ndarray], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Ray Data map_batches: `path` → `image` (B, H, W, 3) uint8. A file that fails is a row with its error and
    a blank image (the driver raises it), so one bad patch stops the run with its name, not a Ray traceback."""
    n = len(batch["path"])
    images = np.zeros((n, *size, 3), np.uint8)
    where, error = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    for i, path in enumerate(batch["path"]):
        try:
            images[i] = decode_patches([str(path)], size)[0]
        except ConfigError as exc:
            where[i], error[i] = exc.input, exc.reason
    return {"index": np.asarray(batch["index"]), "where": where, "error": error, "image": images}


def embed_patches(paths: list[str], size: tuple[int, int], encoder: str, check: EncoderCheck, *,
                  actors: int | None = None, data_cpus: float | None = None, batch_size: int | str = "auto",
                  amp: str = "bf16", progress: bool = True) -> np.ndarray:
    """(N, C) float32 embeddings of patch files, in the order of `paths`, through encode's path: decode in Ray
    Data CPU tasks, embed in a pool of encode.EncodeActor placed by placement.plan_pool (one per GPU, else CPU
    actors beside the reads). `size`: (H, W) every patch must have; `check`: check_encoder's result for
    `encoder` (the weights the actors load). ConfigError naming the first patch that cannot be decoded."""
    import ray

    from .placement import OVERRIDE_HELP, ClusterShape, Watchdog, plan_pool
    from .runtime import init_ray
    from .stream.pipeline import READ_TASK_MEMORY

    init_ray()
    place = plan_pool(ClusterShape.current(), actors=actors, light=check.light, data_cpus=data_cpus)
    log.info("probe placement (%s): %s", encoder, place.describe())
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.execution_options.preserve_order = False  # rows carry their index
    items = [{"index": i, "path": p} for i, p in enumerate(paths)]
    actor_kwargs = {"spec": EncoderSpec(encoder, check.weights, place.device, amp), "dtype": "float32",
                    "torch_threads": place.torch_threads, "batch_size": batch_size, "tile_size": size[0]}
    ds = (
        ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // DECODE_CHUNK, 1000)))
        .map_batches(_decode_rows, fn_kwargs={"size": size}, batch_size=DECODE_CHUNK, batch_format="numpy",
                     num_cpus=place.read_cpus, memory=READ_TASK_MEMORY)
        .map_batches(EncodeActor, fn_constructor_kwargs=actor_kwargs,
                     batch_size=AUTO_BATCH[place.device] if batch_size == "auto" else int(batch_size),
                     batch_format="numpy",
                     compute=ray.data.ActorPoolStrategy(min_size=1, max_size=place.actors,
                                                        max_tasks_in_flight_per_actor=2),
                     num_gpus=place.num_gpus, num_cpus=place.num_cpus)
    )
    out = np.zeros((len(paths), check.dim), np.float32)
    seen = np.zeros(len(paths), bool)
    with Watchdog("probe", OVERRIDE_HELP) as watchdog:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            watchdog.tick()
            bad = np.flatnonzero(batch["error"] != "")
            if len(bad):
                raise ConfigError(str(batch["where"][bad[0]]), str(batch["error"][bad[0]]))
            out[batch["index"]] = batch["embedding"]
            seen[batch["index"]] = True
    if not seen.all():  # never expected: Ray Data retries failed tasks; a silent gap would bias the probe
        raise RuntimeError(f"{int((~seen).sum())} of {len(paths)} patches came back without an embedding")
    return out


# -- the encoder, its twin, and their geometry on these patches ----------------------------------------------

def _check_geometry(config: ProbeConfig, check: EncoderCheck, side: int) -> None:
    """A learned encoder runs on its own tile size and pixel size only; a preset is told about the difference
    (it resizes the patches to its input, as encode does for other tile geometries)."""
    if check.tile_size is not None and (check.tile_size != side or abs(check.mpp - config.mpp) > 1e-6 * check.mpp):
        raise ConfigError(config.weights or config.encoder,
                          f"{config.encoder} was trained on {check.tile_size}-px tiles at {check.mpp:g} µm/px; the "
                          f"patches are {side} px at {config.mpp:g} µm/px: probe it on patches of its geometry, or "
                          f"train one on these (train-encoder --tile-size {side} --mpp {config.mpp:g})")
    preset = find_preset(config.encoder)
    if preset and (side != preset.tile_size or abs(config.mpp - preset.mpp) > 1e-9):
        log.warning("%s was trained on %d-px tiles at %g µm/px (%g µm across); the patches are %d px at %g µm/px "
                    "(%g µm across), resized to its %d-px input", preset.name, preset.tile_size, preset.mpp,
                    preset.tile_size * preset.mpp, side, config.mpp, side * config.mpp, preset.input_size)


def twin_weights(config: ProbeConfig) -> tuple[str | None, str]:
    """The weights of the encoder's random-weights twin and a note for the table; (None, why) when there is
    none: a weightless encoder (mean-rgb), weights that are random already, or --no-random-twin."""
    if not config.random_twin:
        return None, "random twin: not asked for (--no-random-twin)"
    if config.weights == "random":
        return None, f"random twin: none, {config.encoder} has random weights already (it is the control)"
    if config.encoder in LEARNED_METHODS:
        from .encoders.learned import save_random_twin

        path = os.path.join(os.path.abspath(config.out), f"random-twin-{config.slug}.pt")
        return save_random_twin(config.encoder, config.weights or "", path), \
            f"random twin: {config.encoder} of the same geometry, seed 0, untrained ({path})"
    if find_preset(config.encoder) or config.encoder.startswith("timm:"):
        return "random", f"random twin: {config.encoder} with --weights random (seed 0)"
    return None, f"random twin: none, {config.encoder} has no weights"


# -- the run ----------------------------------------------------------------------------------------------

def _classes(data: PatchSet, train: np.ndarray, test: np.ndarray) -> None:
    """The probes score two classes (AUC of the larger label): both in each split, no other."""
    labels = sorted(set(data.labels[train].tolist()))
    if len(labels) != 2:
        raise ConfigError(data.root, f"the probe scores two classes; the training split has {len(labels)} "
                                     f"({', '.join(data.classes[v] for v in labels)})")
    if set(data.labels[test].tolist()) != set(labels):
        raise ConfigError(data.root, "the test split lacks one of the training split's classes "
                                     f"({', '.join(data.classes[v] for v in labels)})")


def _probe_rows(role: str, encoder: str, weights: str | None, digest: str, x_train: np.ndarray,
                y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, config: ProbeConfig,
                seconds: float) -> list[dict[str, Any]]:
    rows = []
    for probe, (pred, score) in (("linear", linear_probe_scores(x_train, y_train, x_test)),
                                 (f"knn-{config.k}", knn_probe_scores(x_train, y_train, x_test, config.k))):
        rows.append({"role": role, "encoder": encoder, "weights": weights or "", "weights_digest": digest,
                     "probe": probe, "dim": int(x_train.shape[1]), "n_train": len(y_train), "n_test": len(y_test),
                     **probe_metrics(y_test, pred, score, reps=config.bootstrap_reps),
                     "embed_seconds": round(seconds, 2)})
    return rows


def run_probe(config: ProbeConfig) -> ProbeReport:
    """Embed the train and test splits of `config.patches` with the encoder and its random twin, probe each
    (linear, k-NN), and write probe-<encoder>.csv / .json under `config.out` and one MLflow run (experiment
    slidegrid-probe). ConfigError on a bad patch set, split, encoder, weights or option."""
    t0 = time.time()
    data = read_patch_set(config.patches, config.mpp)
    train, test = data.split(config.train_split, "--train-split"), data.split(config.test_split, "--test-split")
    _classes(data, train, test)
    if config.k > len(train):
        raise ConfigError("--k", f"k = {config.k} neighbours, but the training split has {len(train)} patches")
    size = decode_patch(data.paths[int(train[0])]).shape[:2]
    if size[0] != size[1]:
        raise ConfigError(data.paths[int(train[0])], f"{size[1]}×{size[0]} px: encoders take square patches")
    idx = np.concatenate([train, test])
    paths = [data.paths[i] for i in idx]
    y_train, y_test = data.labels[train], data.labels[test]
    positive = data.classes[int(max(y_train))]
    dataset = {"patches": data.root, "layout": data.layout, "mpp": data.mpp, "patch_px": int(size[0]),
               "train_split": config.train_split, "test_split": config.test_split, "n_train": len(train),
               "n_test": len(test), "duplicates_dropped": data.duplicates_dropped,
               "classes": {str(k): v for k, v in data.classes.items()}, "positive_class": positive,
               "counts": {s or "(none)": {str(k): v for k, v in c.items()} for s, c in data.counts().items()}}
    log.info("probe: %d train / %d test patches of %s (%d px at %g µm/px)", len(train), len(test), data.root,
             size[0], data.mpp)
    os.makedirs(config.out, exist_ok=True)
    check = check_encoder(config.encoder, config.weights)
    _check_geometry(config, check, int(size[0]))
    kw = {"actors": config.actors, "data_cpus": config.data_cpus, "batch_size": config.batch_size,
          "amp": config.amp, "progress": config.progress}
    rows: list[dict[str, Any]] = []
    t = time.time()
    x = embed_patches(paths, size, config.encoder, check, **kw)
    rows += _probe_rows("encoder", config.encoder, config.weights, check.digest, x[:len(train)], y_train,
                        x[len(train):], y_test, config, time.time() - t)
    twin, note = twin_weights(config)
    if twin is not None:
        twin_check = check_encoder(config.encoder, twin)
        t = time.time()
        x = embed_patches(paths, size, config.encoder, twin_check, **kw)
        rows += _probe_rows("random twin", config.encoder, twin, twin_check.digest, x[:len(train)], y_train,
                            x[len(train):], y_test, config, time.time() - t)
    notes = [note, f"AUC of class {positive!r}; 95% percentile bootstrap CIs over the {len(test)} test patches "
                   f"({config.bootstrap_reps} resamples); probes fitted on {config.train_split!r} only"]
    report = ProbeReport(rows, dataset, notes, time.time() - t0)
    _write(config, report)
    return report


def _write(config: ProbeConfig, report: ProbeReport) -> None:
    """probe-<encoder>.csv and .json under config.out; one MLflow run with the same tables."""
    from .io.tables import csv_text, write_tables
    from .tracking import log_analysis_run

    body = {"encoder": config.encoder, "weights": config.weights, "dataset": report.dataset, "rows": report.rows,
            "notes": report.notes, "seconds": round(report.seconds, 2)}
    tables = {f"probe-{config.slug}.csv": csv_text(report.rows),
              f"probe-{config.slug}.json": json.dumps(body, indent=2, default=str)}
    report.tables = write_tables(config.out, tables)
    if not config.mlflow:
        return
    metrics = {f"{'encoder' if r['role'] == 'encoder' else 'twin'}_{r['probe'].split('-')[0]}_{k}": float(r[k])
               for r in report.rows for k in r if k.split("_low")[0].split("_high")[0] in METRIC_NAMES}
    metrics = {k: v for k, v in metrics.items() if np.isfinite(v)}
    params = {**{k: v for k, v in asdict(config).items() if k not in ("progress", "mlflow")},
              **{f"dataset_{k}": v for k, v in report.dataset.items() if k not in ("counts", "classes")},
              "weights_digest": report.rows[0]["weights_digest"],
              "twin_weights_digest": next((r["weights_digest"] for r in report.rows if r["role"] != "encoder"), "")}
    report.run_id, report.tracking_uri = log_analysis_run(
        "slidegrid-probe", f"probe-{config.slug}", config.out, config.tracking_uri, params,
        {**metrics, "seconds": report.seconds}, tables)


def format_table(report: ProbeReport) -> str:
    """The terminal table: one line per (encoder / random twin, probe), each metric with its 95% CI."""
    head = f"{'':12s} {'probe':8s}" + "".join(f" {name:>22s}" for name in METRIC_NAMES.values())
    lines = [head]
    for r in report.rows:
        cells = "".join(f" {r[k]:7.3f} [{r[k + '_low']:.3f}, {r[k + '_high']:.3f}]" for k in METRIC_NAMES)
        lines.append(f"{r['role']:12s} {r['probe']:8s}{cells}")
    return "\n".join(lines)
