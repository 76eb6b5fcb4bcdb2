"""Slides through OpenSlide 4 (openslide-python with the openslide-bin wheel): MRXS, SCN, BIF, VMS/VMU,
DICOM WSI, and every TIFF-family format it shares with tiffslide. OpenSlide opens local files only;
`readers.cache` gives it a local copy of remote slides.
"""

from __future__ import annotations

import numpy as np

from ...errors import SlideError
from .base import PixelSize, Reader, composite_on_white, damaged
from .metadata import positive


class OpenSlideReader(Reader):
    """A local slide file (or DICOM folder) opened with OpenSlide."""

    name = "openslide"

    def __init__(self, uri: str, path: str, pixel_size: PixelSize | None = None) -> None:
        import openslide

        self.uri = uri
        try:
            self._os = openslide.OpenSlide(path)
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise SlideError(uri, "OpenSlide does not recognise the format; check the file is a whole-slide "
                                  "image (MRXS needs its data folder beside it)") from exc
        except openslide.OpenSlideError as exc:
            raise SlideError(uri, f"OpenSlide cannot read it: {str(exc)[:200]}; the file may be damaged") from exc
        props = dict(self._os.properties)
        self.properties = props
        self.level_dimensions = tuple(tuple(int(v) for v in d) for d in self._os.level_dimensions)
        self._downsamples = tuple(float(d) for d in self._os.level_downsamples)
        w0, h0 = self.level_dimensions[0]
        self._scale = [(w0 / w, h0 / h) for w, h in self.level_dimensions]
        self.vendor = props.get("openslide.vendor")
        self.objective_power = positive(props.get("openslide.objective-power"))
        if pixel_size is None:
            mx, my = positive(props.get("openslide.mpp-x")), positive(props.get("openslide.mpp-y"))
            pixel_size = PixelSize(mx, my, "metadata:openslide") if mx and my else PixelSize(None, None, "missing")
        self.pixel_size = pixel_size

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        import openslide

        # OpenSlide addresses every level by level-0 position divided by its (mean) downsample.
        d = self._downsamples[level]
        try:
            img = self._os.read_region((round(x * d), round(y * d)), level, (width, height))
        except openslide.OpenSlideError as exc:
            pos0 = (round(x * self._scale[level][0]), round(y * self._scale[level][1]))
            raise damaged(self.uri, level, pos0, f"OpenSlide: {str(exc)[:160]}") from exc
        # openslide-python returns un-premultiplied RGBA; alpha 0 is outside the scanned area.
        return composite_on_white(np.asarray(img))

    def close(self) -> None:
        self._os.close()
