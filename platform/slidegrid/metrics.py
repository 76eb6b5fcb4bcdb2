"""Metrics the papers report: AUC, F1/precision/recall, Spearman, Dice, Jaccard, quadratic kappa."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr
from sklearn import metrics as skm


def auc(y_true: Sequence[int], score: Sequence[float]) -> float:
    """Binary ROC AUC; nan when only one class is present (AUC is undefined then)."""
    y = np.asarray(y_true)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(skm.roc_auc_score(y, np.asarray(score)))


def roc_curve(y_true: Sequence[int], score: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) of the binary ROC curve."""
    fpr, tpr, _ = skm.roc_curve(np.asarray(y_true), np.asarray(score))
    return fpr, tpr


def precision_recall_f1(y_true: Sequence[int], y_pred: Sequence[int], average: str = "binary") -> dict[str, float]:
    """Precision, recall and F1 (binary, or macro over classes); 0 where undefined."""
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of correct predictions."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def balanced_accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Mean over the classes present in `y_true` of the fraction of that class predicted right (recall)."""
    return float(skm.balanced_accuracy_score(y_true, y_pred))


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int]) -> np.ndarray:
    """Counts[true, predicted]."""
    return skm.confusion_matrix(y_true, y_pred, labels=list(labels))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (TUPAC16 protocol); nan for constant input."""
    if len(a) < 2 or np.ptp(np.asarray(a, float)) == 0 or np.ptp(np.asarray(b, float)) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks, or soft Dice when `pred` holds probabilities; two empty masks give 1."""
    p, t = np.asarray(pred, float), np.asarray(truth, float)
    denom = p.sum() + t.sum()
    return 1.0 if denom == 0 else float(2 * (p * t).sum() / denom)


def jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two binary masks; two empty masks give 1."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    union = (p | t).sum()
    return 1.0 if union == 0 else float((p & t).sum() / union)


def quadratic_kappa(a: Sequence[int], b: Sequence[int]) -> float:
    """Quadratic-weighted Cohen's kappa (CAMELYON17 pN-stage protocol)."""
    return float(skm.cohen_kappa_score(a, b, weights="quadratic"))


def bootstrap_ci(statistic, n: int, reps: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic(indices) -> float` over `n` units (slides)
    resampled with replacement `reps` times; resamples where the statistic is undefined (NaN, e.g. an AUC of
    one class only) are left out. (nan, nan) when none is defined."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        with np.errstate(all="ignore"):
            try:
                v = float(statistic(rng.integers(0, n, n)))
            except ValueError:  # sklearn: a resample holding one class only
                continue
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
