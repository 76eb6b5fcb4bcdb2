"""Training examples from the grid store: a cohort's slides paired with their grids, labels and folds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..archive import SlideRecord, read_cohort
from ..errors import ConfigError
from ..grids import Grid, grid_uri, read_grid, read_grid_meta

TASKS = ("classification", "regression", "segmentation")


@dataclass(frozen=True)
class Example:
    """One slide as the trainer sees it: where its grid is and what it should predict."""

    slide_id: str
    grid: str
    fold: int | None
    label: int | None = None  # class index (classification)
    target: float | None = None  # regression target
    annotation: str | None = None  # polygons for per-cell labels (segmentation)


@dataclass(frozen=True)
class CohortExamples:
    """The examples of a cohort and the class names their label indices refer to."""

    examples: tuple[Example, ...]
    classes: tuple[str, ...]
    code_size: int

    def split(self, val_fold: int | None) -> tuple[list[Example], list[Example]]:
        """Train / validation examples for one cross-validation fold (no fold: deterministic 80/20)."""
        if val_fold is None:
            idx = np.random.default_rng(0).permutation(len(self.examples))
            cut = max(1, len(idx) // 5)
            val = {int(i) for i in idx[:cut]}
            return ([e for i, e in enumerate(self.examples) if i not in val],
                    [e for i, e in enumerate(self.examples) if i in val])
        train = [e for e in self.examples if e.fold != val_fold]
        val = [e for e in self.examples if e.fold == val_fold]
        if not train or not val:
            raise ConfigError("--val-fold", f"fold {val_fold} leaves an empty train or validation set")
        return train, val


def load_examples(grids: str, cohort: str, task: str,
                  storage_options: Mapping[str, Any] | None = None) -> CohortExamples:
    """Pair every cohort slide that has a grid with its label/target; slides without grids are skipped."""
    if task not in TASKS:
        raise ConfigError("--task", f"{task!r} is not one of {', '.join(TASKS)}")
    records = read_cohort(cohort, storage_options)
    column = {"classification": "label", "regression": "target", "segmentation": "annotation"}[task]
    usable = [r for r in records if getattr(r, column) is not None or task == "segmentation"]
    if not usable:
        raise ConfigError(cohort, f"no slide has a `{column}` value; the {task} task needs that column")
    classes = tuple(sorted({str(r.label) for r in usable})) if task == "classification" else ()
    if task == "classification" and len(classes) < 2:
        raise ConfigError(cohort, f"classification needs at least 2 classes in `label`, found {list(classes)}")
    examples, code_size = [], None
    for r in usable:
        meta = read_grid_meta(grid_uri(grids, r.slide_id), storage_options)
        if meta is None:
            continue
        if code_size is None:
            code_size = int(meta["code_size"])
        elif int(meta["code_size"]) != code_size:
            raise ConfigError(grids, f"grids have different code sizes ({code_size} vs {meta['code_size']} for "
                                     f"{r.slide_id}); encode the cohort with one encoder")
        examples.append(_example(r, grids, task, classes))
    if not examples:
        raise ConfigError(grids, f"no grid found for any slide of {cohort}; run `slidegrid encode` first")
    return CohortExamples(tuple(examples), classes, int(code_size))


def _example(r: SlideRecord, grids: str, task: str, classes: Sequence[str]) -> Example:
    return Example(slide_id=r.slide_id, grid=grid_uri(grids, r.slide_id), fold=r.fold,
                   label=classes.index(str(r.label)) if task == "classification" else None,
                   target=r.target, annotation=r.annotation)


def cell_labels(grid: Grid, annotation: str | None, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """(H, W) int64 per-cell labels: 1 where the cell's centre lies in an annotated region, 0 elsewhere."""
    from ..annotations import rasterize, read_annotations

    h, w = grid.shape
    if not annotation:
        return np.zeros((h, w), np.int64)
    meta = grid.meta
    if meta.get("slide_mpp_y", meta["slide_mpp"]) != meta["slide_mpp"]:
        raise ConfigError(annotation, "per-cell labels need a grid of a slide with square pixels (annotations "
                                      "are rasterized with one pixel size); resample the slide to square pixels")
    cell_mpp = float(meta["target_mpp"]) * float(meta["stride"])
    dims = tuple(int(v) for v in meta["slide_dimensions"])
    mask = rasterize(read_annotations(annotation, storage_options), dims, float(meta["slide_mpp"]), cell_mpp)
    # Grid cell (r, c) covers [c*step, c*step+tile) at target mpp; its centre falls in mask pixel (r, c) for
    # tile == stride, so the rasterized mask at cell resolution lines up with the grid's top-left cells.
    out = np.zeros((h, w), np.int64)
    mh, mw = min(h, mask.shape[0]), min(w, mask.shape[1])
    out[:mh, :mw] = mask[:mh, :mw]
    return out


class GridCache:
    """Dense grids kept in memory per worker (grids are small: 100x100x512 fp16 is 10 MB)."""

    def __init__(self, storage_options: Mapping[str, Any] | None = None, max_items: int = 512) -> None:
        self._opts = storage_options
        self._max = max_items
        self._items: dict[str, tuple[np.ndarray, np.ndarray, Grid]] = {}

    def get(self, uri: str) -> tuple[np.ndarray, np.ndarray, Grid]:
        """(C, H, W) float32 grid, (H, W) kept-cell mask, and the Grid (for metadata)."""
        if uri not in self._items:
            if len(self._items) >= self._max:
                self._items.pop(next(iter(self._items)))
            grid = read_grid(uri, self._opts)
            dense, mask = grid.dense()
            self._items[uri] = (dense, mask, grid)
        return self._items[uri]
