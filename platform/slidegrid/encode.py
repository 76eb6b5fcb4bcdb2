"""The encoding job: a slide archive → one grid of tile embeddings per slide, as one Ray Data stream.

    slides ─► plan (tissue mask + tile grid, CPU task per slide) ─► read (decode tile runs, CPU tasks)
           ─► encoder actor pool (GPU or CPU), rows staged by the actors ─► commit task per slide: atomic grid
              file ─► manifest (the driver only coordinates: stream/pipeline.py)

NIC §2 (papers/nic-neural-image-compression.txt) and the attention paper's "Grid-based Feature Extraction":
a slide becomes an (H, W, C) grid whose cells keep their spatial arrangement. Slides are independent units:
each is written whole, atomically, and skipped on re-run when a grid with the same settings hash exists.

`--dihedral` (NIC §3.2: "90-degree rotation and mirroring, encoding each image 8 times"): the actors encode every
tile under the 8 elements of D4 (grids.TRANSFORMS) in the same stream, and the slide's one grid file keeps the
8 embeddings per tile in its `transform` column. Rotating the whole slide is transforming the cell arrangement
and every tile alike; the grid keeps the tiles' transformed embeddings at their untransformed cells, and the
trainer arranges them (models/nic_cnn.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from . import __version__
from .encoders import EncoderSpec, build_encoder, check_encoder_name
from .encoders.preset import find_preset
from .errors import ConfigError, error_text
from .geometry.tiling import DEFAULT_MPP, DEFAULT_TILE_SIZE, GridSpec, tile_grid
from .geometry.tissue import TissueConfig, tissue_mask
from .io.archive import SlideRecord, scan_archive
from .io.grids import TRANSFORMS, dihedral, grid_table, grid_uri, read_grid_meta, write_grid
from .io.manifest import ManifestWriter, SlideResult
from .io.readers import check_reader
from .io.slides import open_slide_cached
from .placement import PoolPlan
from .stream import (
    StreamResult,
    StreamSpec,
    done_slides,
    list_names,
    remove_stale_temporaries,
    retry_once,
    run_stream,
)

log = logging.getLogger(__name__)

# Tiles per plan chunk: big enough to amortize task overhead, small enough to spread one slide over workers.
CHUNK_TILES = 256
# `--batch-size auto`: tiles per batch Ray Data hands an encoder actor. On a GPU the actor then probes, once, the
# power-of-two chunk that fills its GPU (TorchEncoder.fit_batch: up to this, while it fits and still speeds the
# model up) and runs each batch in such chunks; 512 tiles of 224 px are 77 MB of uint8, a few in flight per
# actor. On CPU tiles/s is flat beyond a few dozen tiles per pass and smaller batches stream more smoothly.
AUTO_BATCH = {"cuda": 512, "cpu": 64}


@dataclass(frozen=True)
class EncodeConfig:
    """Everything `slidegrid encode` takes; validated on construction."""

    input: str
    out: str
    encoder: str = "mean-rgb"
    weights: str | None = None
    # The tile grid; an unchosen mpp / tile size is a foundation-model preset's native one, else DEFAULT_MPP /
    # DEFAULT_TILE_SIZE (resolved on construction: `grid` is always complete afterwards).
    grid: GridSpec = field(default_factory=GridSpec)
    tissue: TissueConfig = field(default_factory=TissueConfig)  # the tissue mask (pen ink left out by default)
    batch_size: int | str = "auto"  # tiles per encoder batch, or "auto" (AUTO_BATCH; probed on a GPU actor)
    dtype: str = "float16"
    overwrite: bool = False
    mpp_override: float | None = None
    reader: str = "auto"  # slide reader backend (readers.READERS)
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    actors: int | None = None
    data_cpus: float | None = None  # CPUs no encoder actor may take (None: planned, placement.py)
    amp: str = "bf16"
    torch_compile: bool = False  # --compile: torch.compile the encoder in each actor
    dihedral: bool = False  # --dihedral: encode each tile 8 times, once per element of D4 (NIC §3.2)
    tracking_uri: str | None = None
    mlflow: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        check_encoder_name(self.encoder)
        self._resolve_geometry()
        if self.dtype not in ("float16", "float32"):
            raise ConfigError("--dtype", f"{self.dtype!r} is not float16 or float32")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigError("--batch-size", "must be a positive integer or auto")
        if self.amp not in ("bf16", "fp16", "off"):
            raise ConfigError("--amp", f"{self.amp!r} is not bf16, fp16 or off")
        if self.actors is not None and self.actors < 1:
            raise ConfigError("--actors", "must be at least 1")
        check_reader(self.reader)

    def _resolve_geometry(self) -> None:
        """An unchosen tile size / mpp becomes the preset's native one (else 224 px at 0.5 µm/px); another
        geometry for a preset is a warning naming the native one (tiles are resized to the model's input)."""
        preset = find_preset(self.encoder)
        tile, mpp = (preset.tile_size, preset.mpp) if preset else (DEFAULT_TILE_SIZE, DEFAULT_MPP)
        grid = self.grid
        if preset and ((grid.tile_size is not None and grid.tile_size != tile)
                       or (grid.mpp is not None and abs(grid.mpp - mpp) > 1e-9)):
            log.warning("%s was trained on %d-px tiles at %g µm/px (%g µm across); encoding %d-px tiles at %g µm/px "
                        "instead (resized to its %d-px input). Leave out --tile-size/--mpp for the native geometry",
                        preset.name, tile, mpp, tile * mpp, grid.tile_size or tile, grid.mpp or mpp,
                        preset.input_size)
        object.__setattr__(self, "grid", grid.resolved(mpp, tile))


def encoder_meta(config: EncodeConfig) -> dict[str, Any]:
    """What grids record about a foundation-model preset beyond its name: its version (a preset whose facts
    change bumps it) and Hugging Face repo; empty for other encoders."""
    preset = find_preset(config.encoder)
    return {"preset": preset.name, "preset_version": preset.version, "preset_repo": preset.hf_repo} if preset else {}


def settings_hash(config: EncodeConfig, weights_digest: str) -> str:
    """Hash of every setting that changes the numbers in a grid (not paths, batch size or placement)."""
    settings = {
        "encoder": config.encoder, "weights": weights_digest, "grid": asdict(config.grid),
        "tissue": asdict(config.tissue), "dtype": config.dtype, "mpp_override": config.mpp_override,
        "reader": config.reader,
    }
    if find_preset(config.encoder):  # other encoders keep the hash (and the grids) they had
        settings["preset_version"] = encoder_meta(config)["preset_version"]
    if config.dihedral:  # unflagged runs keep theirs; a resumed archive never mixes the two kinds of grid
        settings["dihedral"] = True
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


# -- stage 1: plan (one CPU task per slide) -------------------------------------------------------

def _plan(uri: str, opts: str, mpp_override: float | None, config: EncodeConfig):
    slide = open_slide_cached(uri, opts, mpp_override, config.reader)
    mask = tissue_mask(slide, config.tissue)
    return slide, mask, tile_grid(slide.info.dimensions, slide.mpp_xy, config.grid, mask)


def _marker(slide_id: str, uri: str, status: str, error: str, meta: dict) -> dict:
    """A chunk with no tiles that only carries a slide's outcome down the stream."""
    empty = np.zeros(0, np.int64)
    return {"slide_id": slide_id, "uri": uri, "mpp_override": np.nan, "status": status, "error": error, "n_tiles": 0,
            "meta": json.dumps(meta), "index": empty, "row": empty, "col": empty, "x": empty, "y": empty,
            "tissue": np.zeros(0, np.float32)}


def plan_slide(rec: dict, config: EncodeConfig, digest: str, shash: str) -> list[dict]:
    """Tissue mask + tile grid for one slide, split into chunks of tiles; failures become one marker chunk."""
    t0 = time.time()
    sid, uri = rec["slide_id"], rec["uri"]
    mpp_override = rec.get("mpp") or config.mpp_override
    meta: dict[str, Any] = {"slide_id": sid, "source_uri": uri, "plan_started": t0}
    opts = json.dumps(dict(config.storage_options), sort_keys=True)
    try:
        slide, mask, grid = retry_once(_plan, uri, opts, mpp_override, config)
    except Exception as exc:  # one bad slide never stops the archive
        return [_marker(sid, uri, "failed", error_text(exc), meta)]
    meta.update({
        **grid.geometry(), "encoder": config.encoder, **encoder_meta(config), "weights_digest": digest,
        "settings_hash": shash, "dtype": config.dtype, "dihedral": config.dihedral, "reader": slide.info.reader,
        "mpp_source": slide.info.mpp_source, "tissue_mpp": config.tissue.mpp, "tissue_fraction": float(mask.fraction),
        "ink_fraction": float(mask.ink_fraction),
        "slidegrid_version": __version__, "plan_seconds": time.time() - t0,
    })
    n = len(grid)
    if n == 0:  # skipped_no_tissue, or smaller_than_tile when the slide cannot fill one tile
        return [_marker(sid, uri, *grid.empty_reason(), meta)]
    index = np.arange(n)
    chunks = []
    for start in range(0, n, CHUNK_TILES):
        s = slice(start, start + CHUNK_TILES)
        chunks.append({"slide_id": sid, "uri": uri, "mpp_override": mpp_override or np.nan, "status": "ok",
                       "error": "", "n_tiles": n,
                       "meta": json.dumps(meta) if start == 0 else "", "index": index[s],
                       "row": grid.row[s].astype(np.int64), "col": grid.col[s].astype(np.int64),
                       "x": grid.x[s], "y": grid.y[s], "tissue": grid.tissue[s]})
    return chunks


# -- stage 2: read tiles (CPU tasks) --------------------------------------------------------------

def _read_cached(uri: str, opts: str, mpp: float | None, cols: dict[str, np.ndarray], spec: GridSpec,
                 reader: str) -> np.ndarray:
    # Each compressed tile the chunk's tiles cover is decoded once (Slide.read_tiles).
    return open_slide_cached(uri, opts, mpp, reader).read_tiles(cols["x"], cols["y"], spec.tile_size, spec.mpp)


def read_chunk(batch: dict[str, np.ndarray], config: EncodeConfig) -> dict[str, np.ndarray]:
    """Decode the tiles of plan chunks; a read error turns the chunk into a failure marker for its slide."""
    outs = []
    opts = json.dumps(dict(config.storage_options), sort_keys=True)
    t = config.grid.tile_size
    for i in range(len(batch["slide_id"])):
        sid, uri = str(batch["slide_id"][i]), str(batch["uri"][i])
        idx = np.asarray(batch["index"][i], np.int64)
        cols = {k: np.asarray(batch[k][i]) for k in ("row", "col", "x", "y", "tissue")}
        status, error = str(batch["status"][i]), str(batch["error"][i])
        images = np.zeros((len(idx), t, t, 3), np.uint8)
        if len(idx):
            try:
                override = float(batch["mpp_override"][i])
                mpp = None if math.isnan(override) else override
                images = retry_once(_read_cached, uri, opts, mpp, cols, config.grid, config.reader)
            except Exception as exc:
                status, error = "failed", error_text(exc)
        if status != "ok" or not len(idx):
            # Outcome-only row: one blank tile so every row of the stream has the same image shape.
            outs.append({"slide_id": [sid], "status": [status], "error": [error], "n_tiles": [0],
                         "meta": [batch["meta"][i]], "index": [-1], "row": [0], "col": [0], "x": [0], "y": [0],
                         "tissue": [0.0], "image": np.zeros((1, t, t, 3), np.uint8)})
            continue
        n = len(idx)
        meta_col = [batch["meta"][i]] + [""] * (n - 1)
        outs.append({"slide_id": [sid] * n, "status": [status] * n, "error": [""] * n,
                     "n_tiles": [int(batch["n_tiles"][i])] * n, "meta": meta_col, "index": idx,
                     **{k: v for k, v in cols.items()}, "image": images})
    return {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in outs[0]}


# -- stage 3: encoder actors ---------------------------------------------------------------------

class EncodeActor:
    """Holds one encoder (on its GPU when it has one) and embeds batches of tiles; with `dihedral`, each tile under
    the 8 elements of D4 (grids.TRANSFORMS)."""

    def __init__(self, spec: EncoderSpec, dtype: str, torch_threads: int | None, batch_size: int | str = "auto",
                 tile_size: int = 224, dihedral: bool = False) -> None:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        # Built here, once per actor (one per GPU): never on the driver or in a read task.
        self.encoder = build_encoder(spec)
        self.dtype = np.dtype(dtype)
        self.dihedral = dihedral
        # Tiles per forward pass: --batch-size, or on a GPU with "auto" the chunk that fills it (probed now).
        self.chunk = batch_size if batch_size != "auto" else AUTO_BATCH.get(spec.device, AUTO_BATCH["cpu"])
        if hasattr(self.encoder, "fit_batch"):
            if batch_size == "auto" and spec.device == "cuda":
                self.chunk = self.encoder.fit_batch(tile_size, self.chunk)
            self.encoder.max_batch = self.chunk

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Replace the (B, t, t, 3) image column by the embedding column: (B, C), or (B, 8, C) with `dihedral`."""
        images = batch.pop("image")
        if not self.dihedral:
            batch["embedding"] = self.encoder.encode(images).astype(self.dtype)
            return batch
        # One transform at a time: the batch size that fills the device stays the one it was sized for.
        batch["embedding"] = np.stack([self.encoder.encode(np.ascontiguousarray(dihedral(images, k, axes=(1, 2))))
                                       for k in range(len(TRANSFORMS))], axis=1).astype(self.dtype)
        return batch


# -- stage 4: a commit task writes the slide's grid --------------------------------------------------

def commit_grid(config: EncodeConfig, slide_id: str, meta: dict[str, Any],
                columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Write one slide's grid from its staged rows (ordered by tile index), atomically; runs on a worker.
    `columns["embedding"]`: (N, C), or (N, 8, C) for a --dihedral grid."""
    meta = {k: v for k, v in meta.items() if k != "plan_started"}
    emb = columns["embedding"]
    meta.update({"n_tiles": int(len(emb)), "code_size": int(emb.shape[-1])})
    table = grid_table(columns["row"], columns["col"], columns["x"], columns["y"], columns["tissue"], emb, meta)
    write_grid(grid_uri(config.out, slide_id), table, config.storage_options)
    return {"tiles": int(len(emb))}


@dataclass(frozen=True)
class EncoderCheck:
    """What the driver learns about an encoder before any actor starts (check_encoder)."""

    dim: int  # embedding size C
    digest: str  # weights digest (settings hash, MLflow)
    light: bool  # costs next to nothing (mean-RGB): small CPU shares for its actors
    weights: str | None  # what the actors load: a preset's local file (never a download), else as given
    # The tile side (px) and µm/px the weights pin (learned encoders: their net has one input size); None where
    # any geometry runs (a preset resizes tiles to its input).
    tile_size: int | None = None
    mpp: float | None = None


def check_encoder(encoder: str, weights: str | None) -> EncoderCheck:
    """Fail early on the driver and learn the encoder's size, weights digest and weight, and the weights its
    actors load. A foundation-model preset is not built (a ViT-g is 1.1 B parameters): its declared dim, the
    sha256 of its weight file, and its checkpoint's keys checked against the network on the `meta` device; a
    download asked for with hf-hub: happens here, once, and the actors get the local file. Other encoders are
    small and built once on the CPU. ConfigError for an unknown encoder or weights that are missing or do not
    fit."""
    preset = find_preset(encoder)
    if preset is not None:
        from .encoders.preset_encoder import check_weights, locate_weights

        found = locate_weights(preset, weights)
        if found.path is not None:
            check_weights(preset, found.path)
        log.info("%s: weights %s (%s), digest %s", preset.name, found.path or "random", found.source, found.digest)
        return EncoderCheck(preset.dim, found.digest, False, found.path or "random")
    enc = build_encoder(EncoderSpec(encoder, weights, device="cpu"))
    return EncoderCheck(enc.dim, enc.weights_digest, enc.light, weights, enc.tile_size, enc.mpp)


def _probe_encoder(config: EncodeConfig) -> tuple[int, str, bool, str | None]:
    """check_encoder, and a learned encoder's tile geometry against the grid's: (dim, digest, light, weights)."""
    c = check_encoder(config.encoder, config.weights)
    # A learned encoder's weights fix the tile geometry it sees (its preprocessing travels with the weights).
    if c.tile_size is not None and (c.tile_size != config.grid.tile_size or abs(c.mpp - config.grid.mpp) > 1e-9):
        raise ConfigError("--tile-size", f"encoder {config.encoder} ({config.weights}) was trained on "
                                         f"{c.tile_size}-px tiles at {c.mpp:g} µm/px; encode with --tile-size "
                                         f"{c.tile_size} --mpp {c.mpp:g}")
    return c.dim, c.digest, c.light, c.weights


def _verify_grid(config: EncodeConfig, shash: str, rec: SlideRecord) -> SlideResult | None:
    """A grid file the manifest does not vouch for: done when its footer has this run's settings hash."""
    meta = read_grid_meta(grid_uri(config.out, rec.slide_id), config.storage_options)
    if meta and meta.get("settings_hash") == shash:
        return SlideResult(rec.slide_id, rec.uri, "ok", int(meta.get("n_tiles", 0)), 0.0, "", shash, reused=True)
    return None


@dataclass
class EncodeReport:
    """The outcome of an encode run: one result per slide, and this run's throughput."""

    results: list[SlideResult]
    tiles: int  # tiles encoded by this run (not counting slides done earlier)
    seconds: float
    mlflow_run_id: str | None = None
    stream: StreamResult | None = None  # what the stream did (None when every slide was done before)

    @property
    def tiles_per_s(self) -> float:
        """Tiles encoded per second of wall time."""
        return self.tiles / self.seconds if self.seconds else 0.0


def run_encode(config: EncodeConfig) -> EncodeReport:
    """Encode every slide of `config.input` into `config.out`; returns one result per slide."""
    dim, digest, light, weights = _probe_encoder(config)
    listing = scan_archive(config.input, config.storage_options)
    records = listing.records
    shash = settings_hash(config, digest)
    remove_stale_temporaries(config.out)
    writer = ManifestWriter(config.out, config.storage_options)
    # Files of the archive that are not slides get a manifest row saying why, so none vanishes unexplained.
    for f in listing.skipped:
        writer.add(SlideResult(f.name, f.uri, "skipped_not_a_slide", 0, 0.0, f.reason, shash))
    done = {} if config.overwrite else done_slides(
        records, shash, writer.previous(), list_names(config.out, config.storage_options),
        lambda sid: os.path.basename(grid_uri(config.out, sid)), partial(_verify_grid, config, shash))
    todo = [r for r in records if r.slide_id not in done]
    for r in done.values():
        writer.add(r)
    log.info("%d slides: %d to encode, %d already done; %d files not slides", len(records), len(todo), len(done),
             len(listing.skipped))
    stream = run_stream(_stream_spec(config, dim, digest, light, shash, weights), todo, writer) if todo else None
    writer.flush()
    tiles, elapsed = (stream.tiles, stream.seconds) if stream else (0, 0.0)
    report = EncodeReport(writer.results(), tiles, elapsed, stream=stream)
    if config.mlflow:
        from .tracking import log_encode_run

        report.mlflow_run_id = log_encode_run(config, report.results, tiles, elapsed, writer.uri)
    return report


def _stream_spec(config: EncodeConfig, dim: int, digest: str, light: bool, shash: str,
                 weights: str | None) -> StreamSpec:
    """The encode job on the slide-stream skeleton. `weights`: what the actors load (the probe's resolution of
    config.weights: a preset's local file, never a download)."""

    def actor_kwargs(place: PoolPlan) -> dict[str, Any]:
        return {"spec": EncoderSpec(config.encoder, weights, place.device, config.amp, config.torch_compile),
                "dtype": config.dtype, "torch_threads": place.torch_threads, "batch_size": config.batch_size,
                "tile_size": config.grid.tile_size, "dihedral": config.dihedral}

    return StreamSpec(
        name="encode", out=config.out, plan=plan_slide, plan_kwargs={"config": config, "digest": digest, "shash": shash},
        read=read_chunk, read_kwargs={"config": config}, read_batch=1, actor=EncodeActor, actor_kwargs=actor_kwargs,
        actor_batch=lambda place: AUTO_BATCH[place.device] if config.batch_size == "auto" else int(config.batch_size),
        payload=("row", "col", "x", "y", "tissue", "embedding"), commit=partial(commit_grid, config), shash=shash,
        storage_options=dict(config.storage_options), actors=config.actors, data_cpus=config.data_cpus, light=light,
        progress=config.progress)
