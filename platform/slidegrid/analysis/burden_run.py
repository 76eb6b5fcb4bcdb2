"""`slidegrid burden`: viable tumour burden per slide from `slidegrid segment`'s outputs
(papers/digipathai-ensemble-segmentation-framework.txt, "Tumour burden estimation for PAIP dataset").

Per slide of the segment folder's manifest with status ok: the tumour probability heatmap (OUT/<slide_id>/
heatmap.tif, µm/px in its resolution tags) is the viable-tumour map; the tissue mask is recomputed from the slide
at the heatmap's resolution exactly as `segment` computed it (segment does not store it); `tumour_burden` cleans
the viable mask and intersects its convex hull with the tissue. Areas are reported in mm² from the heatmap's µm/px.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, error_text
from ..io.manifest import MANIFEST_NAME, read_manifest
from ..io.storage import filesystem, join
from ..io.tables import csv_text, write_tables
from ..tracking import log_analysis_run
from .tumour_burden import CleanupConfig, tumour_burden

COLUMNS = ("slide_id", "status", "viable_mm2", "whole_mm2", "tissue_mm2", "burden", "heatmap_mpp", "error")


@dataclass(frozen=True)
class BurdenConfig:
    """Everything `slidegrid burden` takes. `out` defaults to the segment folder; `mpp_override` and `reader`
    are the ones `segment` was given (they reopen the slides for their tissue masks)."""

    segment_out: str
    out: str | None = None
    cleanup: CleanupConfig = field(default_factory=CleanupConfig)
    tracking_uri: str | None = None
    mpp_override: float | None = None
    reader: str = "auto"
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> str:
        """The output folder or prefix."""
        return self.out or self.segment_out


def read_heatmap(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[np.ndarray, float]:
    """(H, W) tumour probability in 0..1 and its µm/px from a segment heatmap.tif (probability x 255, the
    resolution in pixels per centimetre)."""
    import tifffile

    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as f, tifffile.TiffFile(io.BytesIO(f.read())) as tif:
        page = tif.pages[0]
        prob = page.asarray().astype(np.float32) / 255
        num, den = page.tags["XResolution"].value
        unit = page.tags["ResolutionUnit"].value if "ResolutionUnit" in page.tags else None
    if unit != tifffile.RESUNIT.CENTIMETER or not num:
        raise ConfigError(uri, "heatmap without a resolution in pixels per cm; write it with `slidegrid segment`")
    return prob, 1e4 * den / num


def heatmap_tissue(slide_uri: str, mpp: float, shape: tuple[int, int], mpp_override: float | None = None,
                   reader: str = "auto", storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """(H, W) bool tissue mask of a slide at `mpp` µm/px, cropped to a heatmap's `shape`, as segment.write_outputs
    computes it (DigiPathAI tissue mask, "Tissue mask generation")."""
    from ..geometry.tissue import TissueConfig, tissue_mask_from_rgb
    from ..io.slides import open_slide

    with open_slide(slide_uri, storage_options, mpp_override, reader) as slide:
        thumb = slide.thumbnail(mpp)[: shape[0], : shape[1]]
    if thumb.shape[:2] != tuple(shape):
        raise ConfigError(slide_uri, f"the slide at {mpp:g} µm/px is {thumb.shape[:2]}, its heatmap {shape}; pass "
                                     "the --mpp-override segment was given")
    return tissue_mask_from_rgb(thumb, mpp, TissueConfig(mpp=mpp)).mask


def slide_burden(config: BurdenConfig, slide_id: str, slide_uri: str) -> dict[str, Any]:
    """One row of burden.csv (COLUMNS): areas in mm², burden = viable / whole tumour (0 without tumour)."""
    opts = config.storage_options
    prob, mpp = read_heatmap(join(config.segment_out, slide_id, "heatmap.tif"), opts)
    tissue = heatmap_tissue(slide_uri, mpp, prob.shape, config.mpp_override, config.reader, opts)
    result = tumour_burden(prob, tissue, config.cleanup)
    mm2 = mpp**2 / 1e6  # mm² per heatmap pixel
    return {"slide_id": slide_id, "status": "ok", "viable_mm2": result.viable_area * mm2,
            "whole_mm2": result.whole_area * mm2, "tissue_mm2": float(tissue.sum()) * mm2, "burden": result.burden,
            "heatmap_mpp": mpp, "error": ""}


@dataclass
class BurdenReport:
    """burden.csv's rows, the slides the segment run did not finish, and where the outputs went."""

    rows: list[dict[str, Any]]
    not_segmented: int
    table: str
    run_id: str
    tracking_uri: str

    @property
    def failed(self) -> int:
        """Slides whose burden could not be computed (their rows hold the error)."""
        return sum(r["status"] == "failed" for r in self.rows)


def run_burden(config: BurdenConfig) -> BurdenReport:
    """Burden of every slide the segment run finished; writes OUT/burden.csv and one MLflow run (experiment
    slidegrid-burden). One bad slide is a `failed` row, never the end of the run; a folder that is not a
    segment output is a ConfigError."""
    manifest = read_manifest(join(config.segment_out, MANIFEST_NAME), config.storage_options)
    if not manifest:
        raise ConfigError(config.segment_out, f"no {MANIFEST_NAME}: not a `slidegrid segment` output folder "
                                              "(pass segment's --out)")
    done = sorted((sid, r["uri"]) for sid, r in manifest.items() if r["status"] == "ok")
    rows = []
    for sid, uri in done:
        try:
            rows.append(slide_burden(config, sid, uri))
        except Exception as exc:  # one bad slide never stops the others
            rows.append({**dict.fromkeys(COLUMNS, ""), "slide_id": sid, "status": "failed",
                         "error": error_text(exc)})
    text = csv_text(rows, COLUMNS)
    uris = write_tables(config.output, {"burden.csv": text}, config.storage_options)
    ok = [r["burden"] for r in rows if r["status"] == "ok"]
    metrics = {"slides": len(ok), "failed": len(rows) - len(ok), "not_segmented": len(manifest) - len(done)}
    if ok:
        metrics.update(mean_burden=float(np.mean(ok)), median_burden=float(np.median(ok)))
    params = {"segment_out": config.segment_out, "out": config.output, "cleanup": asdict(config.cleanup),
              "mpp_override": config.mpp_override, "reader": config.reader,
              "storage_options": dict(config.storage_options)}  # safe_params redacts secrets
    run_id, tracking = log_analysis_run("slidegrid-burden", "burden", config.output, config.tracking_uri, params,
                                        metrics, {"burden.csv": text})
    return BurdenReport(rows, len(manifest) - len(done), uris["burden.csv"], run_id, tracking)
