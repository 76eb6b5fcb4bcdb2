"""Comparing encoders as NIC's Table 1 does (papers/nic-neural-image-compression.txt §4.4): each encoder is a
frozen feature extractor, and a classifier trained on its embeddings tells tumour from non-tumour patches.
The classifier here is a linear probe (standardized features, logistic regression); accuracy on patches of
held-out slides is the score.

Probe patches are tissue tiles on a quarter-tile-stride grid with an unambiguous label: tumour where at least
half of the tile is annotated tumour, non-tumour where none of it is (tiles in between are left out), as many
of each class. The probe archive should be other slides than the encoders were trained on.

The probes themselves (`linear_probe_scores`, `knn_probe_scores`, `probe_metrics`) also score labelled patch
sets (encoders/patches.py) for `slidegrid probe` (probe_patches.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import metrics
from ..errors import ConfigError
from .augment import AugmentRanges, jitter_colour
from .base import Encoder

# Per-tile stain variation of the probe: wider than training augmentation, so that the mean colour (which on
# synthetic slides alone separates tumour) stops being enough and structure has to carry the decision.
STAIN_VARIATION = AugmentRanges(hue=0.06, saturation=(0.6, 1.4), brightness=0.2, contrast=(0.6, 1.5))


@dataclass
class ProbeSet:
    """Labelled patches and the slide each comes from (the train/test split is by slide)."""

    tiles: np.ndarray  # (N, T, T, 3) uint8
    labels: np.ndarray  # (N,) 1 = tumour
    slides: np.ndarray  # (N,) slide ids


def _slide_probe_tiles(rec, tile_size: int, mpp: float, min_tissue: float, per_class: int,
                       rng: np.random.Generator, storage_options: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Up to `per_class` unambiguous tumour and non-tumour grid tiles of one slide, and their labels."""
    from ..geometry.tiling import GridSpec, tile_grid
    from ..geometry.tissue import TissueMask, tissue_mask
    from ..io.annotations import rasterize, read_annotations
    from ..io.slides import open_slide

    # Quarter-tile stride: overlapping candidates, so small tumours still yield enough whole tumour tiles.
    spec = GridSpec(mpp, tile_size, max(1, tile_size // 4), min_tissue)
    with open_slide(rec.uri, storage_options, rec.mpp) as slide:
        grid = tile_grid(slide.info.dimensions, slide.mpp_xy, spec, tissue_mask(slide))
        mask_mpp = tile_size * mpp / 8
        polygons = read_annotations(rec.annotation, storage_options) if rec.annotation else []
        tumour = rasterize(polygons, slide.info.dimensions, slide.mpp, mask_mpp)
        # The tumour mask in tile_grid's tissue slot gives each tile's exact tumour fraction.
        frac = tile_grid(slide.info.dimensions, slide.mpp_xy, GridSpec(mpp, tile_size, spec.stride, 0.0),
                         TissueMask(tumour, mask_mpp))
        fraction = dict(zip(zip(frac.row.tolist(), frac.col.tolist()), frac.tissue.tolist()))
        f = np.array([fraction[(r, c)] for r, c in zip(grid.row.tolist(), grid.col.tolist())])
        picks, labels = [], []
        for label, chosen in ((1, np.flatnonzero(f >= 0.5)), (0, np.flatnonzero(f == 0))):
            take = rng.permutation(chosen)[:per_class]
            picks.append(take)
            labels += [label] * len(take)
        idx = np.sort(np.concatenate(picks))
        order = np.argsort(np.concatenate(picks))
        tiles = slide.read_tiles(grid.x[idx], grid.y[idx], spec.tile_size, spec.mpp)
        return tiles, np.asarray(labels)[order]


def probe_set(archive: str, tile_size: int, mpp: float, per_class: int = 64, min_tissue: float = 0.5,
              stain_jitter: bool = True, seed: int = 0, storage_options: Mapping[str, Any] | None = None) -> ProbeSet:
    """Up to `per_class` tumour and non-tumour tiles from every slide of an annotated archive.

    `stain_jitter` gives every tile its own hue, saturation, contrast and brightness (what differs between
    labs and scanners): on synthetic slides, whose tumour is also a different colour, it makes the probe
    measure more than mean colour, as real archives do.
    """
    from ..io.archive import list_archive

    rng = np.random.default_rng(seed)
    tiles, labels, slides = [], [], []
    for rec in list_archive(archive, storage_options):
        t, y = _slide_probe_tiles(rec, tile_size, mpp, min_tissue, per_class, rng, storage_options or {})
        tiles.append(np.stack([jitter_colour(tile, rng, STAIN_VARIATION) for tile in t]) if stain_jitter and len(t)
                     else t)
        labels.append(y)
        slides += [rec.slide_id] * len(y)
    y = np.concatenate(labels)
    n = min(int((y == 0).sum()), int((y == 1).sum()))
    if n == 0:
        raise ConfigError(archive, "the probe needs tumour and non-tumour tiles: annotate tumour (an `annotation` "
                                   "column) on some slides")
    # As many of each class (chance = 0.5): the majority class is subsampled.
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == k))[:n] for k in (0, 1)]))
    return ProbeSet(np.concatenate(tiles)[keep], y[keep], np.asarray(slides)[keep])


def split_by_slide(data: ProbeSet) -> np.ndarray:
    """Boolean test mask: every other slide of those with tumour tiles, and every other of the rest."""
    test: set[str] = set()
    for with_tumour in (True, False):
        ids = sorted({s for s in data.slides.tolist()
                      if bool((data.labels[data.slides == s] == 1).any()) == with_tumour})
        test.update(ids[1::2])
    return np.isin(data.slides, sorted(test))


def linear_probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The frozen-encoder protocol of NIC §4.4: a logistic regression on standardized features (scaler and
    model fitted on the training rows only). (N, C) features in; the test rows' predicted labels (N,) and
    probability of the larger of two labels (N,) out (the positive class: tumour = 1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    clf.fit(train_x, train_y)
    return clf.predict(test_x), clf.predict_proba(test_x)[:, -1]


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Accuracy of `linear_probe_scores` on the test rows."""
    return float(np.mean(linear_probe_scores(train_x, train_y, test_x)[0] == np.asarray(test_y)))


def knn_probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 20
                     ) -> tuple[np.ndarray, np.ndarray]:
    """k-nearest-neighbour probe (k = 20 as in DINO's and UNI's evaluations): Euclidean distance on features
    standardized with the training rows' mean and std (so no dimension dominates by its scale; the linear
    probe's scaling), uniform votes. Returns the test rows' majority labels (N,) and the fraction of their
    k neighbours with the larger of two labels (N,), the score AUC is computed on.
    Raises ConfigError when k exceeds the training rows."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not 1 <= k <= len(train_y):
        raise ConfigError("--k", f"k = {k} neighbours, but the training split has {len(train_y)} patches")
    clf = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k))
    clf.fit(train_x, train_y)
    return clf.predict(test_x), clf.predict_proba(test_x)[:, -1]


# Metrics of a probe on the test split, each with its bootstrap CI: name -> fn(y, predicted, score).
PROBE_METRICS = {
    "accuracy": lambda y, p, s: metrics.accuracy(y, p),
    "balanced_accuracy": lambda y, p, s: metrics.balanced_accuracy(y, p),
    "auc": lambda y, p, s: metrics.auc(y, s),
}


def probe_metrics(test_y: np.ndarray, predicted: np.ndarray, score: np.ndarray, reps: int = 1000,
                  seed: int = 0) -> dict[str, float]:
    """Accuracy, balanced accuracy and AUC of one probe on the test patches, each with a 95% percentile
    bootstrap interval over the test patches (metrics.bootstrap_ci): keys `NAME`, `NAME_low`, `NAME_high`."""
    y, p, s = np.asarray(test_y), np.asarray(predicted), np.asarray(score)
    out: dict[str, float] = {}
    for name, fn in PROBE_METRICS.items():
        out[name] = float(fn(y, p, s))
        out[f"{name}_low"], out[f"{name}_high"] = metrics.bootstrap_ci(lambda i, f=fn: f(y[i], p[i], s[i]), len(y),
                                                                       reps=reps, seed=seed)
    return out


def embed(encoder: Encoder, tiles: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Embeddings of many tiles, in batches."""
    return np.concatenate([encoder.encode(tiles[i:i + batch_size]) for i in range(0, len(tiles), batch_size)])


def probe_encoders(encoders: Mapping[str, Encoder], data: ProbeSet) -> dict[str, float]:
    """Held-out-slide probe accuracy of each encoder on the same patches and split."""
    test = split_by_slide(data)
    if not test.any() or test.all():
        raise ConfigError("probe", "the probe needs at least two slides of each kind (with / without tumour tiles) "
                                   "to hold slides out")
    out = {}
    for name, enc in encoders.items():
        x = embed(enc, data.tiles)
        out[name] = linear_probe(x[~test], data.labels[~test], x[test], data.labels[test])
    return out
