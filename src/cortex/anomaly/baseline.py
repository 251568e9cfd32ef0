"""Rolling z-score: the classic baseline the autoencoder is measured against.

Each row's features (log-latency, error rate, log-tokens, log-duration, success) are compared with
the mean and standard deviation of the previous ``history`` rows of the same worker; the score is
the largest absolute z over features. Its threshold is set like the autoencoder's: a quantile of
the scores on normal history, so both flag the same share of normal rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cortex._validate import Problems, check_int, check_number, check_positive
from cortex.anomaly.features import transform
from cortex.anomaly.metrics import FIELDS, MetricRow, by_worker, values_array
from cortex.errors import AnomalyError

# Below these spreads a z-score explodes on tiny changes (success is constant 1 for long stretches).
_STD_FLOOR = np.array([0.05 if f not in ("error_rate", "success") else {"error_rate": 0.01, "success": 0.1}[f]
                       for f in FIELDS])


@dataclass
class ZScoreConfig:
    """``history`` rows of trailing context (at least ``min_history`` before scoring), threshold quantile."""

    history: int = 50
    min_history: int = 10
    threshold_quantile: float = 0.995

    def __post_init__(self) -> None:
        problems = Problems()
        if check_positive("zscore.history", self.history, problems, minimum=2):
            check_int("zscore.min_history", self.min_history, problems, minimum=2, maximum=self.history)
        check_number("zscore.threshold_quantile", self.threshold_quantile, problems, 0.5, 1, high_open=True)
        problems.raise_if_any("zscore settings")


class RollingZScore:
    """Max-over-features |z| of each row against its worker's trailing ``history`` rows."""

    kind: ClassVar[str] = "rolling_zscore"

    def __init__(self, config: ZScoreConfig | None = None, threshold: float = 4.0):
        self.config = config or ZScoreConfig()
        self.threshold = threshold

    @property
    def context(self) -> int:
        return self.config.history + 1

    def score_array(self, values: np.ndarray, worker: str = "") -> tuple[np.ndarray, np.ndarray]:
        t = transform(values)  # (N, F)
        n = t.shape[0]
        scores = np.full(n, np.nan)
        top = np.zeros(n, dtype=np.int64)
        h = self.config.history
        for i in range(self.config.min_history, n):
            past = t[max(0, i - h) : i]
            z = np.abs(t[i] - past.mean(0)) / np.maximum(past.std(0), _STD_FLOOR)
            scores[i], top[i] = z.max(), z.argmax()
        return scores, top

    @classmethod
    def fit(cls, rows: list[MetricRow], config: ZScoreConfig | None = None) -> "RollingZScore":
        """Set the threshold to the ``threshold_quantile`` of scores on normal ``rows``."""
        det = cls(config)
        scores = [s for w, idx in by_worker(rows).items()
                  for s in det.score_array(values_array([rows[i] for i in idx]), w)[0] if np.isfinite(s)]
        if len(scores) < 20:
            raise AnomalyError(
                f"Only {len(scores)} scorable rows to set the z-score threshold (each worker needs more than "
                f"{det.config.min_history} rows); give more normal history."
            )
        det.threshold = float(np.quantile(scores, det.config.threshold_quantile))
        return det

    def state(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "threshold": self.threshold, "fields": list(FIELDS)}

    def save_files(self, folder: Path) -> list[str]:
        """The baseline has no weights: everything is in ``detector.json``."""
        return []

    @classmethod
    def from_state(cls, state: dict[str, Any], folder: Path) -> "RollingZScore":
        return cls(ZScoreConfig(**state["config"]), float(state["threshold"]))
