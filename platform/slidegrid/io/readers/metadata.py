"""Pixel size from every place scanners put it in TIFF-family files, with its source.

Sources, most specific first: the Aperio ImageDescription (`MPP = 0.2527`), Philips' XML description
(`DICOM_PIXEL_SPACING`, in mm, row then column, i.e. y then x), Ventana/Roche BIF XMP (`ScanRes`, µm),
OME-XML (`PhysicalSizeX/Y` with their units, µm by default), then the TIFF resolution tags (pixels per
inch or centimetre; also the millimetre and micrometre units some writers use). A resolution unit of
NONE, a missing unit or a zero resolution is no pixel size at all: the TIFF default of inches there is
a screen's 72 dpi, not a microscope's, so the user is asked for --mpp-override instead.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

from .base import PixelSize

# µm per unit for OME's UnitsLength symbols and the TIFF ResolutionUnit codes (2 inch, 3 cm; 4 mm and
# 5 µm are written by tifffile/bioformats-style converters).
_OME_UNITS = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "Å": 1e-4, "pm": 1e-6}
_TIFF_UNITS = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}
# Two sources agreeing within this fraction are the same pixel size.
_AGREE = 0.01


def text(value: Any) -> str:
    """A TIFF ASCII tag as text, whatever bytes it holds (scanners write Latin-1, GBK, ...)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    return "" if value is None else str(value)


def positive(value: Any) -> float | None:
    """`value` as a finite positive float, else None (zero, 0/0, text, NaN are no value)."""
    try:
        v = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _aperio(desc: str) -> tuple[float, float] | None:
    if not desc.startswith("Aperio"):
        return None
    m = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", desc)
    v = positive(m.group(1)) if m else None
    return (v, v) if v else None


def _philips(desc: str) -> tuple[float, float] | None:
    if "DPUfsImport" not in desc:
        return None
    # The first DICOM_PIXEL_SPACING is level 0's: "row spacing" "column spacing" in mm (DICOM PS3.3 10.7.1.3).
    m = re.search(r'Name="DICOM_PIXEL_SPACING"[^>]*>\s*"?([0-9.eE+-]+)"?\s+"?([0-9.eE+-]+)"?', desc)
    if not m:
        return None
    row, col = positive(m.group(1)), positive(m.group(2))
    return (col * 1000, row * 1000) if row and col else None


def _ventana(xmp: str) -> tuple[float, float] | None:
    m = re.search(r'ScanRes\s*=\s*"([0-9.eE+-]+)"', xmp)
    v = positive(m.group(1)) if m else None
    return (v, v) if v else None


def _ome(desc: str) -> tuple[float, float] | None:
    if "<OME" not in desc:
        return None
    try:
        root = ET.fromstring(desc.strip())
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("}Pixels") or el.tag == "Pixels":
            sizes = []
            for axis in ("X", "Y"):
                v = positive(el.get(f"PhysicalSize{axis}"))
                unit = _OME_UNITS.get(el.get(f"PhysicalSize{axis}Unit", "µm"))
                sizes.append(v * unit if v and unit else None)
            if sizes[0] and sizes[1]:
                return sizes[0], sizes[1]
            return None
    return None


def _tiff_tags(page: Any) -> tuple[float, float] | None:
    tags = page.tags
    unit = tags.valueof(296)
    factor = _TIFF_UNITS.get(int(unit)) if unit is not None else None
    if factor is None:
        return None
    out = []
    for code in (282, 283):
        raw = tags.valueof(code)
        if isinstance(raw, tuple) and len(raw) == 2:
            num, den = raw
            res = num / den if den else None
        else:
            res = raw
        res = positive(res)
        if res is None:
            return None
        out.append(factor / res)
    return out[0], out[1]


def tiff_pixel_size(tiff: Any, page: Any) -> PixelSize:
    """Level-0 pixel size of a TIFF-family slide (tifffile TiffFile and its level-0 page).

    Vendor metadata wins over the generic tags; OME-XML wins over conflicting TIFF tags, with a warning.
    """
    desc = text(page.tags.valueof(270))
    first_desc = text(tiff.pages.first.tags.valueof(270)) if tiff.pages.first is not page else desc
    found = None
    for source, value in (("aperio", _aperio(desc)), ("philips", _philips(first_desc) or _philips(desc)),
                          ("ventana-xmp", _ventana(text(page.tags.valueof(700)))),
                          ("ome-xml", _ome(first_desc) or _ome(desc))):
        if value:
            found = source, value
            break
    tags = _tiff_tags(page)
    warnings: list[str] = []
    if found is None:
        if tags is None:
            return PixelSize(None, None, "missing")
        return PixelSize(tags[0], tags[1], "metadata:tiff-tags")
    source, (x, y) = found
    if source == "ome-xml" and tags and not all(abs(a - b) <= _AGREE * b for a, b in zip(tags, (x, y))):
        warnings.append(f"the TIFF resolution tags say {tags[0]:.4g}×{tags[1]:.4g} µm/px but the OME-XML says "
                        f"{x:.4g}×{y:.4g}; using the OME-XML (converters often leave the tags at a default)")
    return PixelSize(x, y, f"metadata:{source}", tuple(warnings))
