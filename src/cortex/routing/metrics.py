"""Scores of a router on labeled data: accuracy, macro-F1, ECE, success AUROC, duration MAE.

Plain numpy, no scikit-learn: the definitions follow scikit-learn's (macro-F1 over the union of
true and predicted labels, AUROC as the Mann-Whitney statistic with ties counted half) so the
numbers compare with published ones; the tests check them against hand-computed values.
"""

from __future__ import annotations

import math

import numpy as np

from cortex.errors import InputError


def _as_1d(name: str, x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise InputError(f"{name} must be one value per example, shape (N,); got shape {a.shape}.")
    return a


def accuracy(y_true, y_pred) -> float:
    """Fraction of ``y_pred == y_true``; ``y_true``, ``y_pred``: ``(N,)``. NaN when N is 0."""
    t, p = _as_1d("y_true", y_true), _as_1d("y_pred", y_pred)
    if t.shape != p.shape:
        raise InputError(f"y_true {t.shape} and y_pred {p.shape} differ in length; pass one prediction per label.")
    return float(np.mean(t == p)) if len(t) else math.nan


def macro_f1(y_true, y_pred) -> float:
    """Unweighted mean of per-class F1 over every class seen in ``y_true`` or ``y_pred``.

    A class with no true and no predicted examples cannot occur; a class predicted but never true
    (or the reverse) has F1 0, as in scikit-learn's ``f1_score(average="macro")``.
    """
    t, p = _as_1d("y_true", y_true), _as_1d("y_pred", y_pred)
    if t.shape != p.shape:
        raise InputError(f"y_true {t.shape} and y_pred {p.shape} differ in length; pass one prediction per label.")
    if not len(t):
        return math.nan
    scores = []
    for c in np.union1d(t, p):
        tp = np.sum((p == c) & (t == c))
        fp = np.sum((p == c) & (t != c))
        fn = np.sum((p != c) & (t == c))
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return float(np.mean(scores))


def expected_calibration_error(probs, y_true, n_bins: int = 15) -> float:
    """ECE of the top-class confidence: ``sum_b |acc_b - conf_b| * n_b / N`` over equal-width bins.

    Args:
        probs: ``(N, C)`` class probabilities, or ``(N,)`` probabilities of the positive class of a
            binary outcome (then the "prediction" is ``p >= 0.5`` and its confidence ``max(p, 1-p)``).
        y_true: ``(N,)`` class indices (or 0/1 outcomes).
        n_bins: bins over ``[0, 1]``; a confidence of exactly 1 falls in the last bin.
    """
    p = np.asarray(probs, dtype=np.float64)
    t = _as_1d("y_true", y_true)
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] != len(t):
        raise InputError(f"probs must be (N, C) or (N,) with N={len(t)} labels; got shape {p.shape}.")
    if not len(t):
        return math.nan
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == t.astype(np.int64)).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += abs(correct[sel].mean() - conf[sel].mean()) * sel.sum() / len(t)
    return float(ece)


def auroc(y_true, scores) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties count 1/2.

    ``y_true``: ``(N,)`` 0/1 (or bool); ``scores``: ``(N,)``. NaN when only one class is present.
    """
    from scipy.stats import rankdata

    t = _as_1d("y_true", y_true).astype(bool)
    s = _as_1d("scores", scores).astype(np.float64)
    if t.shape != s.shape:
        raise InputError(f"y_true {t.shape} and scores {s.shape} differ in length; pass one score per label.")
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)  # average ranks: ties contribute 1/2 to the Mann-Whitney U
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def mean_absolute_error(y_true, y_pred) -> float:
    """``mean |y_true - y_pred|`` over entries where both are finite; NaN when none are."""
    t = _as_1d("y_true", y_true).astype(np.float64)
    p = _as_1d("y_pred", y_pred).astype(np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    return float(np.mean(np.abs(t[ok] - p[ok]))) if ok.any() else math.nan
