"""Annotations: QuPath GeoJSON and ASAP XML polygons (with holes) <-> masks at any mpp, GeoJSON out."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..errors import ConfigError
from .storage import atomic_write, filesystem

# ASAP / CAMELYON16 groups: "_0", "_1" and "Tumor" are tumour, "_2" / "Exclusion" are holes cut from them.
ASAP_EXCLUDE = ("_2", "exclusion")


@dataclass
class Annotation:
    """A polygon in level-0 pixels with optional holes and a class label."""

    exterior: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)
    label: str = "Tumor"


def _ring(coords: Sequence[Sequence[float]]) -> np.ndarray:
    return np.asarray(coords, dtype=np.float64)[:, :2]


def _from_geojson(obj: Any, where: str) -> list[Annotation]:
    if isinstance(obj, list):
        return [a for o in obj for a in _from_geojson(o, where)]
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind == "FeatureCollection":
        return [a for f in obj.get("features", []) for a in _from_geojson(f, where)]
    if kind == "Feature":
        props = obj.get("properties") or {}
        cls = props.get("classification") or {}
        label = cls.get("name") if isinstance(cls, dict) else None
        label = label or props.get("name") or "Tumor"
        return [Annotation(a.exterior, a.holes, str(label)) for a in _from_geojson(obj.get("geometry"), where)]
    if kind == "Polygon":
        rings = obj["coordinates"]
        return [Annotation(_ring(rings[0]), [_ring(r) for r in rings[1:]])] if rings else []
    if kind == "MultiPolygon":
        return [Annotation(_ring(p[0]), [_ring(r) for r in p[1:]]) for p in obj["coordinates"] if p]
    if kind == "GeometryCollection":
        return [a for g in obj.get("geometries", []) for a in _from_geojson(g, where)]
    if kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        return []
    raise ConfigError(where, f"unsupported GeoJSON object {kind!r}; expected a FeatureCollection of polygons")


def _from_asap(root: ET.Element) -> list[Annotation]:
    polys: list[tuple[str, np.ndarray]] = []
    for ann in root.iter("Annotation"):
        pts = sorted(ann.iter("Coordinate"), key=lambda c: int(c.get("Order", 0)))
        if len(pts) >= 3:
            ring = np.array([[float(c.get("X")), float(c.get("Y"))] for c in pts])
            polys.append((str(ann.get("PartOfGroup", "Tumor")), ring))
    keep = [Annotation(r, [], g) for g, r in polys if g.lower() not in ASAP_EXCLUDE]
    holes = [r for g, r in polys if g.lower() in ASAP_EXCLUDE]
    for h in holes:  # attach each exclusion ring to the polygon that contains its first point
        for a in keep:
            if cv2.pointPolygonTest(a.exterior.astype(np.float32), tuple(map(float, h[0])), False) >= 0:
                a.holes.append(h)
                break
    return keep


def read_annotations(uri: str, storage_options: Mapping[str, Any] | None = None) -> list[Annotation]:
    """Polygons of a QuPath GeoJSON (.geojson/.json) or ASAP XML (.xml) file, in level-0 pixels."""
    fs, path = filesystem(uri, storage_options)
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(uri, "annotation file not found; check the `annotation` column") from None
    try:
        if uri.lower().endswith(".xml"):
            return _from_asap(ET.fromstring(data))
        return _from_geojson(json.loads(data), uri)
    except (ValueError, ET.ParseError, KeyError, TypeError, IndexError) as exc:
        raise ConfigError(uri, f"malformed annotation file ({type(exc).__name__}: {exc}); expected QuPath "
                               "GeoJSON or ASAP XML") from None


def rasterize(annotations: Sequence[Annotation], dimensions: tuple[int, int], slide_mpp: float, mpp: float,
              labels: Sequence[str] | None = None) -> np.ndarray:
    """Boolean mask at `mpp` of the slide (level-0 size `dimensions`), holes subtracted."""
    f = slide_mpp / mpp
    w, h = max(1, round(dimensions[0] * f)), max(1, round(dimensions[1] * f))
    mask = np.zeros((h, w), np.uint8)
    chosen = [a for a in annotations if labels is None or a.label in labels]
    for a in chosen:
        cv2.fillPoly(mask, [np.round(a.exterior * f - 0.5).astype(np.int32)], 1)
    for a in chosen:
        for hole in a.holes:
            cv2.fillPoly(mask, [np.round(hole * f - 0.5).astype(np.int32)], 0)
    return mask.astype(bool)


def mask_to_annotations(mask: np.ndarray, mask_mpp: float, slide_mpp: float, label: str = "Tumor",
                        min_area_px: int = 4) -> list[Annotation]:
    """Polygons (with holes) of a mask, scaled to level-0 pixels."""
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    f = mask_mpp / slide_mpp
    out: list[Annotation] = []
    index: dict[int, Annotation] = {}
    for i, (c, h) in enumerate(zip(contours, hierarchy[0])):
        if h[3] == -1 and cv2.contourArea(c) >= min_area_px and len(c) >= 3:
            index[i] = Annotation((c[:, 0, :].astype(np.float64) + 0.5) * f, [], label)
            out.append(index[i])
    for c, h in zip(contours, hierarchy[0]):
        if h[3] in index and len(c) >= 3:
            index[h[3]].holes.append((c[:, 0, :].astype(np.float64) + 0.5) * f)
    return out


def to_geojson(annotations: Sequence[Annotation], color: tuple[int, int, int] = (200, 0, 0)) -> dict[str, Any]:
    """A QuPath-openable FeatureCollection."""

    def closed(r: np.ndarray) -> list[list[float]]:
        pts = [[round(float(x), 2), round(float(y), 2)] for x, y in r]
        return pts + [pts[0]] if pts and pts[0] != pts[-1] else pts

    features = [{"type": "Feature",
                 "geometry": {"type": "Polygon", "coordinates": [closed(a.exterior), *[closed(h) for h in a.holes]]},
                 "properties": {"objectType": "annotation",
                                "classification": {"name": a.label, "color": list(color)}}}
                for a in annotations]
    return {"type": "FeatureCollection", "features": features}


def mask_to_geojson(mask: np.ndarray, mask_mpp: float, slide_mpp: float, label: str = "Tumor",
                    min_area_px: int = 4) -> dict[str, Any]:
    """Mask -> QuPath GeoJSON in level-0 pixel coordinates."""
    return to_geojson(mask_to_annotations(mask, mask_mpp, slide_mpp, label, min_area_px))


def write_geojson(obj: dict[str, Any] | Sequence[Annotation], uri: str,
                  storage_options: Mapping[str, Any] | None = None) -> None:
    """Write GeoJSON (a dict, or annotations) atomically."""
    data = obj if isinstance(obj, dict) else to_geojson(obj)
    with atomic_write(uri, storage_options) as f:
        f.write(json.dumps(data).encode())
