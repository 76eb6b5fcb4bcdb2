"""Metrics against hand-computed values and their edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slidegrid import metrics


def test_auc_and_edge_case():
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert math.isnan(metrics.auc([1, 1], [0.2, 0.3]))


def test_precision_recall_f1():
    r = metrics.precision_recall_f1([1, 1, 0, 0], [1, 0, 1, 0])
    assert r == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_dice_jaccard():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert metrics.dice(a, b) == pytest.approx(0.5)
    assert metrics.jaccard(a, b) == pytest.approx(1 / 3)
    assert metrics.dice(np.zeros(3), np.zeros(3)) == 1.0
    assert metrics.dice(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)


def test_spearman_and_kappa():
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 35]) == pytest.approx(1.0)
    assert math.isnan(metrics.spearman([1, 1, 1], [1, 2, 3]))
    assert metrics.quadratic_kappa([0, 1, 2, 3], [0, 1, 2, 3]) == pytest.approx(1.0)
    assert metrics.quadratic_kappa([0, 1, 2, 3], [3, 2, 1, 0]) < 0
