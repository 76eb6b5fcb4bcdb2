"""Tissue masks from a thumbnail, the DigiPathAI way (papers/digipathai-ensemble-segmentation-framework.txt,
"Tissue mask generation" and its CAMELYON-specific pre-processing): near-black pixels to white, 7x7 median
blur, Otsu on the HSV saturation channel, then morphological clean-up sized in µm.

Pen ink is taken out first (`ink_mask`): marker ink is more saturated than H&E, so left in it wins Otsu's
threshold, and the mask becomes the ink and misses the paler tissue beside it. Like the public pen filters,
ours looks for colours that H&E does not take: histolab's RedPenFilter / GreenPenFilter / BluePenFilter
(boxes in RGB, histolab/filters/image_filters_functional.py), HistoQC's pen module
(`ClassificationModule.byExampleWithFeatures:pen_markings`, a pixel classifier trained on example pen
images) and Trident's `remove_penmarks` (the GrandQC artefact segmentation network). It needs no model and
no example images: hue bands in HSV and a darkness test in optical density (Beer-Lambert, the quantity
Ruifrok & Johnston's colour deconvolution separates stains in), grown from sure ink into its paler rim by
hysteresis (Canny's two-threshold linking).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_holes, remove_small_objects

from ..errors import ConfigError, SlideError

if TYPE_CHECKING:
    from ..io.slides import Slide


# Fraction of near-black thumbnail pixels above which a slide is taken for fluorescence / dark-field.
DARK_FIELD = 0.5

@dataclass(frozen=True)
class TissueConfig:
    """Tissue detection settings; areas in µm² and lengths in µm so they hold at any thumbnail mpp."""

    mpp: float = 8.0
    median_kernel: int = 7
    black_threshold: int = 50
    min_saturation: float = 0.05
    closing_um: float = 50.0
    min_object_um2: float = 20000.0
    min_hole_um2: float = 20000.0  # glass enclosed by tissue and smaller than this is filled (0: none)
    remove_ink: bool = True  # pen / marker ink is not tissue (H&E only: blue or green stains would go too)
    ink_spread_um: float = 200.0  # how far a pen stroke's paler rim is followed from its sure ink
    min_ink_um2: float = 1000.0  # sure ink smaller than this is a stained speck (blood, dye), not a pen stroke

    def __post_init__(self) -> None:
        if not 0.1 <= self.mpp <= 1000:
            raise ConfigError("--tissue-mpp", f"{self.mpp} µm/px is outside 0.1..1000")
        if self.median_kernel < 1 or self.median_kernel % 2 == 0:
            raise ConfigError("median_kernel", "must be a positive odd number")
        if not 0 <= self.black_threshold <= 255:
            raise ConfigError("black_threshold", "must be within 0..255")
        if not 0 <= self.min_saturation < 1:
            raise ConfigError("min_saturation", "must be within [0, 1)")
        if min(self.closing_um, self.min_object_um2, self.min_hole_um2, self.ink_spread_um, self.min_ink_um2) < 0:
            raise ConfigError("tissue config", "sizes must be non-negative")


@dataclass
class TissueMask:
    """A boolean tissue mask, the µm per pixel it was computed at and the pen ink taken out of it."""

    mask: np.ndarray
    mpp: float
    ink: np.ndarray | None = None  # same shape as mask; None where ink was not looked for

    @property
    def fraction(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def ink_fraction(self) -> float:
        """Fraction of the thumbnail classified as pen ink (and so left out of the mask)."""
        return float(self.ink.mean()) if self.ink is not None and self.ink.size else 0.0


class _InkColour(NamedTuple):
    hue: tuple[float, float]  # degrees, [start, end); start > end wraps through 0°
    min_saturation: float  # HSV, [0, 1]


class _DarkInk(NamedTuple):
    grey_od: float  # grey ink: least mean optical density over R, G, B ...
    grey_max_saturation: float  # ... with its HSV saturation below this
    black_od: float  # black ink: least optical density in every channel, whatever the saturation


# H&E takes hues from about 240° (haematoxylin, blue-purple) round to 350° (eosin, pink). "Sure" pixels start a
# stroke; "rim" pixels (paler ink, ink over tissue) are taken only when a stroke reaches them. Measured on all
# 8,000 real H&E PatchCamelyon patches at 7.75 µm/px, the sure colours hold 0.001% of the pixels (none at all
# in CMU-1 and a TCGA frozen section) and no sure stroke forms in them (tests/geometry/test_tissue.py).
_SURE_COLOURS = (
    _InkColour((75.0, 225.0), 0.20),  # green, teal and blue ink: no H&E hue
    _InkColour((345.0, 20.0), 0.65),  # red ink: eosin's hue, far more saturated (~0.9; eosin, blood <= 0.65)
)
_RIM_COLOURS = (_InkColour((60.0, 238.0), 0.10), _InkColour((340.0, 20.0), 0.20))
# Neutral ink adds the same optical density to every channel: over glass it is dark grey, over tissue it keeps
# the stain's saturation but lets no channel through. Stained tissue that dark stays purple and bright in one
# channel (CMU-1's densest epidermis: 0.51 in its brightest channel at 8 µm/px).
_SURE_DARK = _DarkInk(0.50, 0.25, 0.60)
_RIM_DARK = _DarkInk(0.35, 0.30, 0.45)


def _ink_like(hue: np.ndarray, sat: np.ndarray, rgb_product: np.ndarray, brightest: np.ndarray,
              colours: tuple[_InkColour, ...], dark: _DarkInk) -> np.ndarray:
    # Optical densities (Beer-Lambert, OD = -log10(I / 255)) tested on intensities, without logarithms: the mean
    # OD over R, G, B is at least t where R*G*B <= (255 * 10^-t)^3, and every channel's where the brightest
    # channel is <= 255 * 10^-t.
    out = (rgb_product <= (255 * 10 ** -dark.grey_od) ** 3) & (sat < 255 * dark.grey_max_saturation)
    out |= brightest <= 255 * 10 ** -dark.black_od
    for (lo, hi), min_sat in colours:
        lo, hi = lo * 256 / 360, hi * 256 / 360  # OpenCV's 8-bit "full" hue: 256 steps for 360°
        in_band = (hue >= lo) & (hue < hi) if lo < hi else (hue >= lo) | (hue < hi)
        out |= in_band & (sat >= 255 * min_sat)
    return out


def ink_mask(rgb: np.ndarray, mpp: float, config: TissueConfig = TissueConfig()) -> np.ndarray:
    """Pen and marker ink (red, green, blue, black) in an RGB thumbnail taken at `mpp` µm/px.

    Hue bands and an optical-density darkness test pick the pixels that are surely ink, kept where they
    form a stroke of at least config.min_ink_um2; the stroke's paler rim and the ink lying over tissue are
    then followed from them, up to config.ink_spread_um away, through pixels that only look like ink
    (hysteresis), so that a pale eosin or haematoxylin pixel is never taken on its own. Sources: see the
    module docstring (histolab, HistoQC, Trident). Expects a denoised thumbnail (tissue_mask_from_rgb
    passes its median-blurred one).
    """
    img = np.ascontiguousarray(rgb[..., :3])
    # 8-bit HSV and channel arithmetic keep a large thumbnail to a few small passes (hue to 1.4°).
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)  # hue 0-255 for 0-360°, saturation 0-255
    hue, sat = hsv[..., 0], hsv[..., 1]
    r, g, b = cv2.split(img)
    rgb_product = r.astype(np.float32)  # exact: 255^3 < 2^24
    rgb_product *= g
    rgb_product *= b
    brightest = cv2.max(cv2.max(r, g), b)
    sure = _ink_like(hue, sat, rgb_product, brightest, _SURE_COLOURS, _SURE_DARK)
    if config.min_ink_um2 > 0 and sure.any():
        sure = remove_small_objects(sure, max_size=max(0, int(config.min_ink_um2 / (mpp * mpp)) - 1))
    steps = int(round(config.ink_spread_um / mpp))
    if steps > 0 and sure.any():
        rim = _ink_like(hue, sat, rgb_product, brightest, _RIM_COLOURS, _RIM_DARK)
        # A bounded geodesic dilation: a chain of ink-like pixels must not carry the stroke across tissue.
        sure = ndimage.binary_dilation(sure, iterations=steps, mask=rim | sure)
    return sure


def tissue_mask_from_rgb(rgb: np.ndarray, mpp: float, config: TissueConfig = TissueConfig()) -> TissueMask:
    """Tissue mask of an RGB thumbnail taken at `mpp` µm/px, pen ink left out unless config.remove_ink is off."""
    img = np.ascontiguousarray(rgb[..., :3]).copy()
    # Black scanner borders / pen would win Otsu's threshold: make them glass first (DigiPathAI, CAMELYON17).
    img[(img < config.black_threshold).all(axis=-1)] = 255
    if min(img.shape[:2]) >= config.median_kernel:
        img = cv2.medianBlur(img, config.median_kernel)
    ink = ink_mask(img, mpp, config) if config.remove_ink else None
    if ink is not None:
        img[ink] = 255  # glass, for the same reason as the black pixels above
    sat = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32) / 255.0
    floor = config.min_saturation
    # All-glass slides have a tiny saturation range and Otsu would split noise: require a real contrast.
    thr = threshold_otsu(sat) if float(sat.max() - sat.min()) > floor else 1.0
    mask = sat > max(thr, floor)
    px_area = mpp * mpp
    radius = int(round(config.closing_um / mpp / 2))
    if radius > 0 and mask.any():
        # Pad with the edge so that closing does not erode tissue cut by the slide border.
        padded = np.pad(mask, radius + 1, mode="edge")
        mask = ndimage.binary_closing(padded, structure=_disk(radius))[radius + 1:-radius - 1, radius + 1:-radius - 1]
    if config.min_hole_um2 > 0:
        mask = remove_small_holes(mask, max_size=max(0, int(config.min_hole_um2 / px_area) - 1))
    if ink is not None:
        mask &= ~ink  # closing and hole filling would otherwise give back a stroke lying inside tissue
    if config.min_object_um2 > 0:
        mask = remove_small_objects(mask, max_size=max(0, int(config.min_object_um2 / px_area) - 1))
    return TissueMask(mask=mask.astype(bool), mpp=mpp, ink=ink)


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def tissue_mask(slide: Slide, config: TissueConfig = TissueConfig()) -> TissueMask:
    """Tissue mask of a slide from its thumbnail at config.mpp (read from the smallest sufficient level)."""
    mpp = max(config.mpp, *slide.mpp_xy)  # square mask pixels, also on slides with non-square ones
    thumb = slide.thumbnail(mpp)
    dark = float((thumb.max(axis=-1) < config.black_threshold).mean())
    if dark > DARK_FIELD:
        # Brightfield glass is white; a mostly black slide is fluorescence or dark-field, where this recipe
        # (black to white, then stain saturation) would outline whatever glows as "tissue".
        raise SlideError(slide.uri, f"{dark:.0%} of the slide is black background: a fluorescence or dark-field "
                                    "image, not brightfield; slidegrid's tissue masks and encoders are for "
                                    "brightfield stains such as H&E")
    return tissue_mask_from_rgb(thumb, mpp, config)
