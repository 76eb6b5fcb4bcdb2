"""slidegrid: gigapixel whole-slide images to grids of tile embeddings, on Ray.

The public API: the names the CLI and `jobs/` call, one `run_<job>(<Job>Config) -> <Job>Report` per job, and the
readers of what they write. Each is loaded on first use (PEP 562), so `import slidegrid` stays light on Ray workers.

    import slidegrid as sg
    report = sg.run_encode(sg.EncodeConfig(input="slides/", out="grids/", encoder="mean-rgb"))
    grid = sg.read_grid("grids/slide_1.parquet")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_API: dict[str, str] = {
    # slides, archives, grids, manifests
    "open_slide": "io.slides", "list_archive": "io.archive", "read_grid": "io.grids",
    "read_grid_meta": "io.grids", "read_manifest": "io.manifest",
    "GridSpec": "geometry.tiling", "TissueConfig": "geometry.tissue", "tissue_mask": "geometry.tissue",
    "SyntheticSpec": "synth.slides", "write_synthetic_slide": "synth.slides",
    # encoders
    "EncoderSpec": "encoders", "build_encoder": "encoders", "available_encoders": "encoders",
    # jobs
    "EncodeConfig": "encode", "EncodeReport": "encode", "run_encode": "encode",
    "SegmentConfig": "segment", "SegmentReport": "segment", "run_segment": "segment",
    "ProbeConfig": "probe_patches", "ProbeReport": "probe_patches", "run_probe": "probe_patches",
    "TrainConfig": "train.aggregator.config", "TrainReport": "train.aggregator.fit", "run_train": "train.aggregator.fit",
    "SweepSpace": "train.aggregator.sweep", "load_space": "train.aggregator.sweep", "TuneConfig": "train.aggregator.sweep",
    "TuneReport": "train.aggregator.sweep", "run_tune": "train.aggregator.sweep",
    "EncoderTrainConfig": "train.encoder.config", "EncoderTrainReport": "train.encoder.fit",
    "run_train_encoder": "train.encoder.fit",
    "SegTrainConfig": "train.segmentation.config", "SegTrainReport": "train.segmentation.fit", "run_train_seg": "train.segmentation.fit",
    "PredictConfig": "predict", "PredictReport": "predict", "run_predict": "predict",
    "PnStageConfig": "analysis.pn_stage_run", "PnStageReport": "analysis.pn_stage_run",
    "run_pn_stage": "analysis.pn_stage_run",
    "BurdenConfig": "analysis.burden_run", "BurdenReport": "analysis.burden_run", "run_burden": "analysis.burden_run",
    "DemoConfig": "demo", "DemoReport": "demo", "run_demo": "demo",
    "init_ray": "runtime",
}
_ALIASES = {"available_encoders": "available"}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'slidegrid' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), _ALIASES.get(name, name))
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({"__version__", *_API})
