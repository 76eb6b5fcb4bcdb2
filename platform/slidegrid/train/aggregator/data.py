"""Training examples from the grid store: a cohort's slides paired with their grids, labels and folds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...io.archive import SlideRecord, read_cohort
from ...io.grids import Grid, grid_uri, read_grid, read_grid_meta
from ..splits import check_patients_apart, holdout_patients, patient_key

TASKS = ("classification", "regression", "segmentation")
# Values of a cohort's `split` column.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Example:
    """One slide as the trainer sees it: where its grid is and what it should predict."""

    slide_id: str
    grid: str
    fold: int | None
    label: int | None = None  # class index (classification)
    target: float | None = None  # regression target
    annotation: str | None = None  # polygons for per-cell labels (segmentation)
    split: str | None = None  # the cohort's `split` column (train | val | test), when it has one
    patient_id: str | None = None  # slides of one patient stay in one part of a split (train/splits.py)


@dataclass(frozen=True)
class Split:
    """Who sees which slides: training fits on `train`, model selection (early stopping, the kept checkpoint)
    sees only `val`, and `test` is scored once at the end with the selected model (NIC §4: 2 folds train, 1
    validation, 1 test). `test` is empty when no test set was asked for; `how` says how the split was made."""

    train: list[Example]
    val: list[Example]
    test: list[Example]
    how: str


@dataclass(frozen=True)
class CohortExamples:
    """The examples of a cohort and the class names their label indices refer to."""

    examples: tuple[Example, ...]
    classes: tuple[str, ...]
    code_size: int

    def split(self, val_fold: int | None = None, test_fold: int | None = None) -> Split:
        """Train / validation / test examples.

        A cohort `split` column (train | val | test on every slide) wins and excludes the fold flags. Else
        `test_fold` K: fold K is the test set and `val_fold` (default: the next fold in order after K, cyclic)
        validates; the other folds train. Else `val_fold` alone validates (no test set), or with no fold a
        deterministic 80/20 train/validation split of the patients. Raises ConfigError when a part would be empty
        or a patient's slides would fall in two parts (train/splits.py).
        """
        marked = [e for e in self.examples if e.split is not None]
        if marked:
            if val_fold is not None or test_fold is not None:
                raise ConfigError("--test-fold", "the cohort has a `split` column: it decides train/val/test; leave "
                                                 "out --val-fold/--test-fold (or drop the column to use folds)")
            bad = sorted({str(e.split) for e in marked} - set(SPLITS)) or (
                ["(empty)"] if len(marked) != len(self.examples) else [])
            if bad:
                raise ConfigError("split", f"values {bad} in the cohort's `split` column; every slide needs one of "
                                           f"{', '.join(SPLITS)}")
            parts = {s: [e for e in self.examples if e.split == s] for s in SPLITS}
            sp = Split(parts["train"], parts["val"], parts["test"], "the cohort's split column")
        elif test_fold is not None:
            folds = sorted({e.fold for e in self.examples if e.fold is not None})
            if test_fold not in folds:
                raise ConfigError("--test-fold", f"fold {test_fold} is not one of the cohort's folds {folds}")
            if val_fold is None:
                val_fold = folds[(folds.index(test_fold) + 1) % len(folds)]
            if val_fold == test_fold:
                raise ConfigError("--val-fold", f"must differ from --test-fold ({test_fold})")
            sp = Split([e for e in self.examples if e.fold not in (val_fold, test_fold)],
                       [e for e in self.examples if e.fold == val_fold],
                       [e for e in self.examples if e.fold == test_fold],
                       f"test fold {test_fold}, validation fold {val_fold}")
        elif val_fold is not None:
            sp = Split([e for e in self.examples if e.fold != val_fold],
                       [e for e in self.examples if e.fold == val_fold], [],
                       f"validation fold {val_fold}, no test set")
        else:
            keys = [patient_key(e.slide_id, e.patient_id) for e in self.examples]
            val = holdout_patients(keys)
            sp = Split([e for e, k in zip(self.examples, keys) if k not in val],
                       [e for e, k in zip(self.examples, keys) if k in val], [], "80/20 by patient, no test set")
        check_patients_apart({"train": _slides(sp.train), "validation": _slides(sp.val), "test": _slides(sp.test)},
                             sp.how)
        if not sp.train or not sp.val or (test_fold is not None and not sp.test):
            raise ConfigError("--val-fold", f"{sp.how} leaves an empty part ({len(sp.train)} train, {len(sp.val)} "
                                            f"validation, {len(sp.test)} test slides)")
        return sp


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


def _slides(examples: Sequence[Example]) -> list[tuple[str, str | None]]:
    return [(e.slide_id, e.patient_id) for e in examples]


def _example(r: SlideRecord, grids: str, task: str, classes: Sequence[str]) -> Example:
    return Example(slide_id=r.slide_id, grid=grid_uri(grids, r.slide_id), fold=r.fold,
                   label=classes.index(str(r.label)) if task == "classification" else None,
                   target=r.target, annotation=r.annotation, split=r.split, patient_id=r.patient_id)


def cell_labels(grid: Grid, annotation: str | None, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """(H, W) int64 per-cell labels: 1 where the cell's centre lies in an annotated region, 0 elsewhere."""
    from ...io.annotations import rasterize, read_annotations

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
        """(C, H, W) float32 grid, (H, W) kept-cell mask, and the Grid (for metadata; with Grid.transforms
        when the grid was encoded with --dihedral, for NIC's crops and test-time averaging)."""
        if uri not in self._items:
            if len(self._items) >= self._max:
                self._items.pop(next(iter(self._items)))
            grid = read_grid(uri, self._opts, transforms=True)
            dense, mask = grid.dense()
            self._items[uri] = (dense, mask, grid)
        return self._items[uri]
