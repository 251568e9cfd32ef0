"""Temperature scaling (Guo et al., 2017): one scalar ``T > 0`` fitted on held-out logits.

Dividing logits by ``T`` keeps the argmax (so accuracy is unchanged) and only sharpens or softens
the probabilities. The held-out negative log-likelihood is convex in ``beta = 1 / T`` (log-sum-exp of
a linear function minus a linear term), so a bounded 1-D search finds the global optimum; no
learning rate, no iterations to tune.
"""

from __future__ import annotations

import numpy as np

from cortex.errors import InputError

BETA_RANGE = (1e-3, 1e3)  # T between 0.001 and 1000: wider than anything a sane model needs


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``z / temperature``; ``z``: ``(N, C)``."""
    return np.exp(_log_softmax(np.asarray(z, dtype=np.float64) / temperature))


def sigmoid(z, temperature: float = 1.0) -> np.ndarray:
    """``1 / (1 + exp(-z / temperature))`` elementwise, without overflow."""
    z = np.asarray(z, dtype=np.float64) / temperature
    return np.exp(-np.logaddexp(0.0, -z))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    lp = _log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-lp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits, labels) -> float:
    """The ``T`` minimizing held-out NLL of ``softmax(logits / T)``.

    Args:
        logits: ``(N, C)`` class logits, or ``(N,)`` logits of a binary outcome (fitted as the
            two-class logits ``[0, z]``).
        labels: ``(N,)`` class indices (0/1 for a binary outcome).

    Returns 1.0 when there are no examples (nothing to calibrate on).
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if z.ndim == 1:
        z = np.stack([np.zeros_like(z), z], axis=1)
    if z.ndim != 2 or z.shape[0] != y.shape[0]:
        raise InputError(f"logits must be (N, C) or (N,) with N={y.shape[0]} labels; got shape {z.shape}.")
    if len(y) == 0:
        return 1.0
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise InputError(f"labels must be class indices in [0, {z.shape[1]}); got range [{y.min()}, {y.max()}].")
    # optimize log(beta): convexity in beta makes the problem unimodal in log(beta) as well
    res = minimize_scalar(
        lambda lb: nll(z, y, 1.0 / np.exp(lb)), bounds=tuple(np.log(BETA_RANGE)), method="bounded",
        options={"xatol": 1e-6},
    )
    return float(1.0 / np.exp(res.x))
