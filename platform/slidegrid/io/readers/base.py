"""What every slide reader backend provides: level geometry, pixel size, and pixels in level coordinates."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ...errors import SlideError

# Untiled (strip) images are decoded whole once per slide and worker; beyond this a strip is refused,
# since decoding it for every tile (or holding it) would cost more than converting the file once.
MAX_SEGMENT_BYTES = 256 * 2**20


@dataclass(frozen=True)
class PixelSize:
    """Level-0 µm per pixel along x and y, where they came from, and what looked wrong on the way.

    `source` is "metadata:<where>" (aperio, ome-xml, tiff-tags, philips, ventana-xmp, openslide) or "missing".
    """

    x: float | None
    y: float | None
    source: str
    warnings: tuple[str, ...] = field(default=())


class Reader(ABC):
    """One open slide file through one library. Coordinates are level pixels; `Slide` does the rest."""

    name: str
    level_dimensions: tuple[tuple[int, int], ...]
    pixel_size: PixelSize
    vendor: str | None
    objective_power: float | None
    properties: dict[str, Any]

    @abstractmethod
    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) of `level` whose top-left is level pixel (x, y), inside the level.

        Transparent pixels come back white (background, like padding outside the slide).
        Raises SlideError naming the damaged tile's level-0 position when tile data cannot be decoded.
        """

    def read_boxes(self, level: int, x: np.ndarray, y: np.ndarray, width: np.ndarray, height: np.ndarray,
                   out: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]] | None:
        """Many boxes of `level` at once, decoding each compressed source tile they cover once per call.

        Box k has its top-left at level pixel (x[k], y[k]) and is width[k] × height[k] (int arrays); it may reach
        outside the level, which comes back white. Yields (k, RGB uint8 (height[k], width[k], 3)) once per box, in
        any order; where `out` ((N, H, W, 3)) is given, a box of size (W, H) is written into out[k] and yielded as
        that view. Same pixels and errors as `read` box by box.

        None here: a backend without a direct tile path, which `Slide` then reads box by box through `read`
        (the region path). Backends that decode tiles themselves override it.
        """
        return None

    @abstractmethod
    def close(self) -> None:
        """Release files and library handles."""


def composite_on_white(rgba: np.ndarray, premultiplied: bool = False) -> np.ndarray:
    """RGB uint8 (h, w, 3) of an RGBA uint8 image laid on white: alpha 0 is glass, not black."""
    rgb, a = rgba[..., :3], rgba[..., 3:4]
    if (a == 255).all():
        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)  # 5x faster than copying the strided channel slice
    a16 = a.astype(np.uint16)
    if premultiplied:
        out = rgb.astype(np.uint16) + (255 - a16)
    else:
        out = (rgb.astype(np.uint16) * a16 + 255 * (255 - a16) + 127) // 255
    return np.minimum(out, 255).astype(np.uint8)


def damaged(uri: str, level: int, pos0: tuple[int, int], reason: str) -> SlideError:
    """The error of a tile that cannot be decoded, named by its level-0 position."""
    return SlideError(uri, f"damaged tile at level-0 ({pos0[0]}, {pos0[1]}) (level {level}): {reason}; "
                           "the file is corrupt there: re-export or re-scan the slide")
