"""Router metrics against hand-computed values (and scikit-learn when it is installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cortex.errors import InputError
from cortex.routing.metrics import accuracy, auroc, expected_calibration_error, macro_f1, mean_absolute_error


def test_accuracy_and_macro_f1_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0, 3])  # class 3 predicted, never true
    assert accuracy(y, p) == pytest.approx(4 / 7)
    # per class F1 = 2tp / (2tp + fp + fn): c0 tp1 fp1 fn1 -> 1/2; c1 tp2 fp1 fn0 -> 4/5; c2 tp1 fp0 fn2 -> 2/4; c3 -> 0
    assert macro_f1(y, p) == pytest.approx((0.5 + 0.8 + 0.5 + 0.0) / 4)


def test_macro_f1_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    y, p = rng.integers(0, 7, 211), rng.integers(0, 5, 211)
    assert macro_f1(y, p) == pytest.approx(sk.f1_score(y, p, average="macro"))


def test_ece_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right) in 10 bins: bins 9 and 6
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    y = np.array([0, 1, 1])
    expected = (2 / 3) * abs(0.5 - 0.9) + (1 / 3) * abs(1.0 - 0.6)
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(expected)
    # the binary form: p of the positive class
    assert expected_calibration_error(np.array([0.1, 0.1, 0.6]), y, n_bins=10) == pytest.approx(expected)


def test_auroc_is_the_pairwise_probability_with_half_ties():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 13).astype(bool)
    s = rng.integers(0, 4, 13).astype(float)  # many ties
    pos, neg = s[y], s[~y]
    pairs = [(a > b) + 0.5 * (a == b) for a in pos for b in neg]
    assert auroc(y, s) == pytest.approx(np.mean(pairs))
    assert math.isnan(auroc(np.ones(5, bool), np.arange(5.0)))


def test_mae_skips_missing_and_shapes_are_checked():
    assert mean_absolute_error([1.0, np.nan, 3.0], [2.0, 5.0, 1.0]) == pytest.approx(1.5)
    with pytest.raises(InputError, match="differ in length"):
        accuracy([1, 2], [1])
