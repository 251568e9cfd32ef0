"""From raw metric values to the scaled features and windows that the detectors score.

Latency, tokens and duration are heavy-tailed, so they enter as ``log1p``; error rate and success
are shares already. Each feature is then centred by its median and scaled by a robust spread
(IQR / 1.349, which equals the standard deviation for normal data) measured on normal history,
so one outlier in the training data does not stretch the scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cortex.anomaly.metrics import FIELDS

LOG_FIELDS = frozenset({"latency_ms", "tokens", "duration_s"})
_MIN_SCALE = {"error_rate": 0.01, "success": 0.1}  # shares that barely vary still need a usable scale


def transform(values: np.ndarray) -> np.ndarray:
    """``(N, F)`` raw values → ``(N, F)`` with ``log1p`` on the heavy-tailed fields."""
    out = np.array(values, dtype=np.float64, copy=True)
    for j, f in enumerate(FIELDS):
        if f in LOG_FIELDS:
            out[:, j] = np.log1p(out[:, j])
    return out


@dataclass
class FeatureScaler:
    """Robust per-feature centre and scale fitted on normal rows."""

    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> "FeatureScaler":
        """Fit on raw values ``(N, F)``."""
        t = transform(values)
        q1, med, q3 = np.percentile(t, [25, 50, 75], axis=0)
        std = t.std(axis=0)
        floor = np.array([_MIN_SCALE.get(f, 0.05) for f in FIELDS])
        # IQR is 0 for near-constant features (success is mostly 1); fall back to std, then a floor.
        scale = np.maximum(np.where(q3 - q1 > 0, (q3 - q1) / 1.349, std), floor)
        return cls(med, scale)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Raw ``(N, F)`` → scaled ``(N, F)`` float32."""
        return ((transform(values) - self.center) / self.scale).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"center": self.center.tolist(), "scale": self.scale.tolist(), "fields": list(FIELDS)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureScaler":
        return cls(np.asarray(data["center"], dtype=np.float64), np.asarray(data["scale"], dtype=np.float64))


def sliding_windows(z: np.ndarray, window: int) -> np.ndarray:
    """``(N, F)`` → ``(N - window + 1, window * F)``: row ``i`` is rows ``i .. i+window-1`` flattened."""
    n, f = z.shape
    if n < window:
        return np.zeros((0, window * f), dtype=z.dtype)
    return np.lib.stride_tricks.sliding_window_view(z, (window, f))[:, 0].reshape(n - window + 1, window * f)
