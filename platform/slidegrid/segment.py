"""Slide-scale tumour segmentation, one Ray Data stream over an archive
(papers/digipathai-ensemble-segmentation-framework.txt, "Inference pipeline", "Uncertainty analysis"):

    slides ─► plan (tissue mask, overlapping tiles: stride = half a tile, CPU task per slide)
           ─► read tiles (CPU tasks; concentric multi-mpp tiles for MRN members)
           ─► ensemble actors: TTA per member, ensemble mean, aleatoric (Eq. 4) and epistemic (Eq. 5) variance,
              maps down-scaled to the heatmap resolution
              (rows staged by the actors; the driver only coordinates: stream/pipeline.py)
           ─► commit task per slide: overlapping tiles averaged (uniform / Gaussian) into heatmaps ─► outputs

Inference tiles are larger than the training patches (default 4x: 1024 vs 256) and overlap by 50 %, the
paper's choices against tile seams. Per slide, under OUT/<slide_id>/: heatmap.tif (pyramidal, tumour
probability x 255), aleatoric.tif and epistemic.tif (pyramidal, float32 variances), overlay.png (the heatmap
over the thumbnail), tumour.geojson (regions at p >= threshold inside tissue, level-0 px: QuPath opens it),
features.json (Table 5 heatmap features). OUT/features.csv gathers every slide's features and
OUT/_manifest.parquet every slide's outcome: one bad slide never stops the archive, and a re-run skips
slides already done with the same settings.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from .errors import ConfigError, error_text
from .geometry.tiling import read_concentric, tissue_fraction
from .geometry.tissue import TissueConfig, tissue_mask, tissue_mask_from_rgb
from .io.archive import scan_archive
from .io.manifest import ManifestWriter, SlideResult
from .io.readers import check_reader
from .io.slides import open_slide_cached
from .io.storage import atomic_write, filesystem, join
from .stitching import WEIGHTINGS, HeatmapAccumulator, tile_positions
from .stream import StreamSpec, done_slides, list_names, remove_stale_temporaries, retry_once, run_stream

log = logging.getLogger(__name__)
# Maps per tile: tumour probability, aleatoric variance, epistemic variance.
MAPS = ("probability", "aleatoric", "epistemic")


@dataclass(frozen=True)
class SegmentConfig:
    """Everything `slidegrid segment` takes; sizes are pixels at the model's mpp."""

    input: str
    model: str
    out: str
    tile_size: int | None = None  # default: 4 x the training patch
    stride: int | None = None  # default: half a tile (50 % overlap)
    weighting: str = "gaussian"
    tta: bool = True
    members: int | None = None  # use only the first N members (benchmarks)
    heatmap_mpp: float = 8.0
    threshold: float = 0.5
    min_tissue: float = 0.01
    batch_size: int = 4
    actors: int | None = None
    data_cpus: float | None = None  # CPUs no model actor may take (None: planned, placement.py)
    overwrite: bool = False
    tracking_uri: str | None = None
    mpp_override: float | None = None
    reader: str = "auto"  # slide reader backend (readers.READERS)
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ConfigError("--weighting", f"{self.weighting!r} is not one of {', '.join(WEIGHTINGS)}")
        if not 0 < self.threshold < 1:
            raise ConfigError("--threshold", f"{self.threshold} is not within (0, 1)")
        if not 0 <= self.min_tissue <= 1:
            raise ConfigError("--min-tissue", "must be within 0..1")
        check_reader(self.reader)
        for name in ("tile_size", "stride", "batch_size", "actors", "members"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"--{name.replace('_', '-')}", "must be at least 1")
        TissueConfig(mpp=self.heatmap_mpp)


@dataclass(frozen=True)
class Geometry:
    """Resolved inference geometry: model mpps, tile and stride (px at mpps[0]), heatmap downsample."""

    mpps: tuple[float, ...]
    tile: int
    stride: int
    factor: int  # model px per heatmap px


def resolve_geometry(config: SegmentConfig, spec: Mapping[str, Any], multiple: int) -> Geometry:
    """Tile, stride and heatmap factor for a model; ConfigError naming the flag when they do not fit."""
    mpps = tuple(float(m) for m in spec["mpps"])
    ratio = config.heatmap_mpp / mpps[0]
    factor = round(ratio)
    if factor < 1 or abs(ratio - factor) > 1e-6:
        raise ConfigError("--heatmap-mpp", f"{config.heatmap_mpp} must be a whole multiple of the model's "
                                           f"{mpps[0]} µm/px")
    tile = config.tile_size or 4 * int(spec["patch_size"])
    stride = config.stride or tile // 2
    unit = math.lcm(multiple, factor)
    if tile % unit:
        raise ConfigError("--tile-size", f"{tile} px must be a multiple of {unit} (the model's stride "
                                         f"{multiple} and the heatmap factor {factor})")
    if stride % factor or stride > tile:
        raise ConfigError("--stride", f"{stride} px must be a multiple of {factor} and at most the tile ({tile})")
    return Geometry(mpps, tile, stride, factor)


def settings_hash(config: SegmentConfig, geometry: Geometry) -> str:
    """Hash of every setting that changes a slide's outputs."""
    settings = {"model": config.model, "geometry": asdict(geometry), "weighting": config.weighting,
                "tta": config.tta, "members": config.members, "heatmap_mpp": config.heatmap_mpp,
                "threshold": config.threshold, "min_tissue": config.min_tissue,
                "mpp_override": config.mpp_override, "reader": config.reader}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def _override(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _marker(sid: str, uri: str, status: str, error: str) -> dict[str, Any]:
    return {"slide_id": sid, "uri": uri, "mpp_override": np.nan, "status": status, "error": error, "n_tiles": 0,
            "index": -1, "px": 0, "py": 0, "meta": "{}"}


# -- stage 1: plan (CPU task per slide) ---------------------------------------------------------------

def plan_slide(rec: Mapping[str, Any], config: SegmentConfig, geometry: Geometry) -> list[dict[str, Any]]:
    """One row per tissue tile (top-left in model px); a failure or an empty slide is one marker row."""
    t0 = time.time()
    sid, uri = str(rec["slide_id"]), str(rec["uri"])
    override = _override(rec.get("mpp")) or config.mpp_override
    try:
        slide = retry_once(open_slide_cached, uri, json.dumps(dict(config.storage_options), sort_keys=True), override, config.reader)
        if not slide.square:
            # Heatmaps, stitching and GeoJSON here are square-pixel images of the slide: refuse, never skew.
            raise ConfigError(uri, "non-square pixels ({:.4g} x {:.4g} µm/px): segment needs square pixels; "
                                   "resample the slide to square pixels first".format(*slide.mpp_xy))
        tissue = tissue_mask(slide, TissueConfig(mpp=max(config.heatmap_mpp, slide.mpp)))
        scale = geometry.mpps[0] / slide.mpp  # level-0 px per model px
        W, H = (math.ceil(d / scale) for d in slide.info.dimensions)
        pos = np.array(tile_positions(W, H, geometry.tile, geometry.stride), np.int64)
        frac = tissue_fraction(tissue, pos[:, 0] * scale, pos[:, 1] * scale, geometry.tile * scale, slide.mpp)
        pos = pos[frac > config.min_tissue]
    except Exception as exc:  # one bad slide never stops the archive
        return [_marker(sid, uri, "failed", error_text(exc))]
    if not len(pos):
        return [_marker(sid, uri, "skipped_no_tissue", "")]
    meta = json.dumps({"slide_mpp": slide.mpp, "dimensions": list(slide.info.dimensions), "uri": uri,
                       "mpp_override": override, "plan_started": t0})
    return [{"slide_id": sid, "uri": uri, "mpp_override": override or np.nan, "status": "ok", "error": "",
             "n_tiles": len(pos), "index": i, "px": int(px), "py": int(py), "meta": meta}
            for i, (px, py) in enumerate(pos)]


# -- stage 2: read tiles (CPU tasks) ------------------------------------------------------------------

def read_batch(batch: dict[str, np.ndarray], config: SegmentConfig, geometry: Geometry) -> dict[str, np.ndarray]:
    """Add the `image` column (B, J, T, T, 3); a failed read marks its row failed (its slide fails)."""
    t, j = geometry.tile, len(geometry.mpps)
    opts = json.dumps(dict(config.storage_options), sort_keys=True)
    images = np.full((len(batch["slide_id"]), j, t, t, 3), 255, np.uint8)
    status, error = batch["status"].astype(object), batch["error"].astype(object)
    for i in range(len(images)):
        if batch["index"][i] < 0:
            continue
        try:
            slide = retry_once(open_slide_cached, str(batch["uri"][i]), opts,
                               _override(float(batch["mpp_override"][i])), config.reader)
            half0 = t * geometry.mpps[0] / slide.mpp / 2
            scale = geometry.mpps[0] / slide.mpp
            cx, cy = batch["px"][i] * scale + half0, batch["py"][i] * scale + half0
            images[i] = read_concentric(slide, cx, cy, geometry.mpps, t)
        except Exception as exc:
            status[i], error[i] = "failed", error_text(exc)
    return {**batch, "status": status.astype(str), "error": error.astype(str), "image": images}


# -- stage 3: ensemble actors -------------------------------------------------------------------------

def downscale(maps: np.ndarray, factor: int) -> np.ndarray:
    """(..., H, W) -> (..., H/f, W/f) by averaging f x f blocks (H, W multiples of f)."""
    if factor == 1:
        return maps
    *lead, h, w = maps.shape
    return maps.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


class SegmentActor:
    """Holds the ensemble (on its GPU when it has one) and turns tiles into down-scaled maps."""

    def __init__(self, ensemble, tta: bool, factor: int, torch_threads: int | None = None) -> None:
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.ensemble = ensemble.to(self.device).eval()
        self.tta, self.factor = tta, factor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Replace `image` by `maps` (B, 3, T/f, T/f): probability, aleatoric and epistemic variance."""
        import torch

        from .stitching import ensemble_predict
        from .train.segmentation.data import normalize

        images = batch.pop("image")
        spec = self.ensemble.spec
        x = normalize(images, spec["mean"], spec["std"])  # (B, J, 3, T, T)
        if len(spec["mpps"]) == 1:  # U-Net / DeepLab members take (B, 3, T, T); MRN members (B, J, 3, T, T)
            x = x[:, 0]
        out = ensemble_predict(list(self.ensemble.members), torch.from_numpy(x).to(self.device), tta=self.tta)
        aleatoric = out.get("aleatoric", torch.zeros_like(out["mean"]))
        maps = torch.stack([out["mean"][:, 1], aleatoric[:, 1], out["epistemic"][:, 1]], dim=1)
        batch["maps"] = downscale(maps.float().cpu().numpy(), self.factor)
        return batch


# -- stage 4: a commit task stitches and writes ------------------------------------------------------

class SlideStitcher:
    """A slide's tiles averaged into (3, H, W) maps at the heatmap resolution."""

    def __init__(self, n_tiles: int, shape: tuple[int, int], factor: int, weighting: str,
                 meta: Mapping[str, Any] | None = None) -> None:
        self.acc = HeatmapAccumulator((len(MAPS), *shape), scale=1.0, weighting=weighting)
        self.seen = np.zeros(n_tiles, bool)
        self.factor = factor
        self.meta = dict(meta or {})

    def add(self, index: int, px: int, py: int, maps: np.ndarray) -> None:
        """One tile's maps; its top-left (px, py) is in model px. A tile given twice counts once."""
        if not self.seen[index]:
            self.acc.add(px / self.factor, py / self.factor, maps)
            self.seen[index] = True

    @property
    def complete(self) -> bool:
        """Whether every planned tile has arrived."""
        return bool(self.seen.all())


def commit_outputs(config: SegmentConfig, geometry: Geometry, slide_id: str, meta: dict[str, Any],
                 columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Stitch one slide's staged tile maps (ordered by tile index) and write its outputs; runs on a worker."""
    n = len(columns["index"])
    shape = heatmap_shape(tuple(meta["dimensions"]), meta["slide_mpp"], max(config.heatmap_mpp, meta["slide_mpp"]))
    st = SlideStitcher(n, shape, geometry.factor, config.weighting, meta)
    for i in range(n):
        st.add(int(columns["index"][i]), int(columns["px"][i]), int(columns["py"][i]), columns["maps"][i])
    features = write_outputs(config, slide_id, meta["uri"], st.acc.result(), meta, _override(meta["mpp_override"]))
    return {"tiles": n, "features": features}


def heatmap_shape(dimensions: tuple[int, int], slide_mpp: float, heatmap_mpp: float) -> tuple[int, int]:
    """(H, W) of the heatmap: the slide thumbnail's size at `heatmap_mpp`."""
    scale = heatmap_mpp / slide_mpp
    return max(1, round(dimensions[1] / scale)), max(1, round(dimensions[0] / scale))


def write_pyramid_tiff(array: np.ndarray, uri: str, mpp: float,
                       storage_options: Mapping[str, Any] | None = None) -> None:
    """A 2-D map as a tiled pyramidal TIFF (levels halving down to ~64 px in SubIFDs), mpp in its tags."""
    import cv2
    import tifffile

    levels = [array]
    while max(levels[-1].shape) > 64 and min(levels[-1].shape) > 1:
        a = levels[-1]
        levels.append(cv2.resize(a, (max(1, a.shape[1] // 2), max(1, a.shape[0] // 2)), interpolation=cv2.INTER_AREA))
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf, bigtiff=True) as tif:
        for i, level in enumerate(levels):
            d = 2**i
            tif.write(level, tile=(256, 256) if min(level.shape) >= 256 else None, photometric="minisblack",
                      compression="zlib", resolution=(1e4 / (mpp * d), 1e4 / (mpp * d)), resolutionunit="CENTIMETER",
                      metadata=None, **({"subifds": len(levels) - 1} if i == 0 else {"subfiletype": 1}))
    with atomic_write(uri, storage_options) as f:
        f.write(buf.getvalue())


def write_outputs(config: SegmentConfig, sid: str, uri: str, maps: np.ndarray, meta: Mapping[str, Any],
                  override: float | None) -> dict[str, float]:
    """Heatmap and uncertainty TIFFs, overlay PNG, GeoJSON and features of a finished slide; returns features."""
    from .analysis.heatmap_features import heatmap_features
    from .io.annotations import mask_to_geojson, write_geojson
    from .viz import heatmap_overlay, save_png

    opts = config.storage_options
    slide = open_slide_cached(uri, json.dumps(dict(opts), sort_keys=True), override, config.reader)
    mpp = max(config.heatmap_mpp, slide.mpp)
    thumb = slide.thumbnail(mpp)[: maps.shape[1], : maps.shape[2]]
    tissue = tissue_mask_from_rgb(thumb, mpp, TissueConfig(mpp=mpp)).mask
    prob = maps[0]
    base = join(config.out, sid)
    write_pyramid_tiff((np.clip(prob, 0, 1) * 255 + 0.5).astype(np.uint8), join(base, "heatmap.tif"), mpp, opts)
    write_pyramid_tiff(maps[1].astype(np.float32), join(base, "aleatoric.tif"), mpp, opts)
    write_pyramid_tiff(maps[2].astype(np.float32), join(base, "epistemic.tif"), mpp, opts)
    save_png(heatmap_overlay(thumb, np.where(tissue, prob, 0)), join(base, "overlay.png"), opts)
    tumour = (prob >= config.threshold) & tissue
    write_geojson(mask_to_geojson(tumour, mpp, float(meta["slide_mpp"])), join(base, "tumour.geojson"), opts)
    features = {"slide_id": sid, **heatmap_features(prob, tissue, mpp=mpp)}
    with atomic_write(join(base, "features.json"), opts) as f:
        f.write(json.dumps(features).encode())
    return features


@dataclass
class SegmentReport:
    """The outcome of a segment run: one result per slide and this run's throughput."""

    results: list[SlideResult]
    tiles: int
    seconds: float
    tile_size: int
    resolutions: int
    features: str | None = None

    @property
    def tiles_per_s(self) -> float:
        """Tiles segmented per second of wall time."""
        return self.tiles / self.seconds if self.seconds else 0.0

    @property
    def megapixels_per_s(self) -> float:
        """Input megapixels (tiles x side² x resolutions) per second."""
        return self.tiles_per_s * self.tile_size**2 * self.resolutions / 1e6


def _read_features(config: SegmentConfig, sid: str) -> dict[str, Any] | None:
    fs, path = filesystem(join(config.out, sid, "features.json"), config.storage_options)
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None


def _write_features_table(config: SegmentConfig, rows: list[dict[str, Any]]) -> str | None:
    if not rows:
        return None
    uri = join(config.out, "features.csv")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["slide_id"]))
    with atomic_write(uri, config.storage_options) as f:
        f.write(text.getvalue().encode())
    return uri


def _previous_features(config: SegmentConfig, done: Mapping[str, SlideResult]) -> dict[str, dict[str, Any]]:
    """Features of slides done earlier: OUT/features.csv (one read), and features.json only for done slides
    missing there."""
    fs, path = filesystem(join(config.out, "features.csv"), config.storage_options)
    try:
        with fs.open(path, "r") as f:
            rows = {r["slide_id"]: r for r in csv.DictReader(f)}
    except FileNotFoundError:
        rows = {}
    out = {}
    for sid, res in done.items():
        found = rows.get(sid) if res.status == "ok" else None
        found = found or (_read_features(config, sid) if res.status == "ok" else None)
        if found is not None:
            out[sid] = found
    return out


def run_segment(config: SegmentConfig, ensemble=None) -> SegmentReport:
    """Segment every slide of `config.input` into `config.out` (an already loaded `ensemble` skips loading)."""
    from .models.seg_ensemble import load_ensemble

    if ensemble is None:
        ensemble = load_ensemble(config.model, config.tracking_uri)
    if config.members:
        ensemble = ensemble.subset(config.members)
    geometry = resolve_geometry(config, ensemble.spec, ensemble.multiple)
    shash = settings_hash(config, geometry)
    listing = scan_archive(config.input, config.storage_options)
    remove_stale_temporaries(config.out)
    writer = ManifestWriter(config.out, config.storage_options)
    for f in listing.skipped:
        writer.add(SlideResult(f.name, f.uri, "skipped_not_a_slide", 0, 0.0, f.reason, shash))
    # A slide's outputs are its folder; features.json, written last, is what makes it whole.
    done = {} if config.overwrite else done_slides(listing.records, shash, writer.previous(),
                                                   list_names(config.out, config.storage_options), lambda sid: sid)
    features = _previous_features(config, done)
    done = {sid: r for sid, r in done.items() if r.status != "ok" or sid in features}
    todo = [r for r in listing.records if r.slide_id not in done]
    for r in done.values():
        writer.add(r)
    tiles, seconds = 0, 0.0
    if todo:
        spec = StreamSpec(
            name="segment", out=config.out, plan=plan_slide, plan_kwargs={"config": config, "geometry": geometry},
            read=read_batch, read_kwargs={"config": config, "geometry": geometry}, read_batch=config.batch_size,
            actor=SegmentActor,
            actor_kwargs=lambda place: {"ensemble": ensemble, "tta": config.tta, "factor": geometry.factor,
                                        "torch_threads": place.torch_threads},
            actor_batch=lambda place: config.batch_size, payload=("px", "py", "maps"),
            commit=partial(commit_outputs, config, geometry), shash=shash, storage_options=dict(config.storage_options),
            actors=config.actors, data_cpus=config.data_cpus, progress=config.progress)
        result = run_stream(spec, todo, writer)
        tiles, seconds = result.tiles, result.seconds
        features.update({sid: extra["features"] for sid, extra in result.extras.items()})
    writer.flush()
    table = _write_features_table(config, list(features.values()))
    return SegmentReport(writer.results(), tiles, seconds, geometry.tile, len(geometry.mpps), table)
