"""The router's context root: numeric features of the workers and the task.

Features (``F = 3 * C + 3`` for ``C`` masters), in this order:

* per master: recent ``success_rate`` (0-1), ``queue_length`` and ``latency_ms`` (both log1p'd:
  they are heavy-tailed), as reported in the worker-metrics history or in the request;
* the task's ``priority``;
* the time of day as ``hour_sin``, ``hour_cos`` (so 23:59 and 00:00 are neighbours).

Missing values are NaN and become the training mean (0 after standardization). A feature that was
never observed in training is switched off (always 0): its weights never saw data, so feeding it
live values would inject noise into the decision.

Why a module here and not a NeuralTree root: the tree's roots (``conv1d``, ``transformer``, ``hf``)
all read token ids; there is no root kind for a vector of numbers. :class:`ContextEncoder`
standardizes the features and maps them with a small MLP to a ``(B, 1, D)`` vector that the router
adds to the tree's trunk features, exactly what a pooled root would contribute to a ``sum`` trunk.
A ``numeric`` root kind in the tree (``{"values": (B, F)}`` with stored standardization) would make
this module unnecessary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cortex.errors import InputError
from cortex.routing.data import WORKER_METRICS, RecordError, ctx_column, parse_timestamp

TASK_FEATURES = ("priority", "hour_sin", "hour_cos")
LOG_METRICS = ("queue_length", "latency_ms")
UNIT_SCALE = ("hour_sin", "hour_cos")
CLIP = 3.0  # standardized features beyond 3 standard deviations are clipped


def context_feature_names(masters: Sequence[str]) -> list[str]:
    """Names of the ``F`` features, in order."""
    return [ctx_column(m, metric) for m in masters for metric in WORKER_METRICS] + list(TASK_FEATURES)


def _hour_features(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hours = (np.mod(ts, 86400.0)) / 3600.0  # UTC hour of day, NaN stays NaN
    angle = 2 * np.pi * hours / 24.0
    return np.sin(angle), np.cos(angle)


def _transform(names: Sequence[str], raw: np.ndarray) -> np.ndarray:
    out = raw.astype(np.float64, copy=True)
    for j, name in enumerate(names):
        if name.rsplit("__", 1)[-1] in LOG_METRICS:
            out[:, j] = np.log1p(np.maximum(out[:, j], 0.0))
    return out


def frame_context(frame: pd.DataFrame, masters: Sequence[str]) -> np.ndarray:
    """``(N, F)`` raw features of a training-set frame (NaN where unknown)."""
    names = context_feature_names(masters)
    n = len(frame)
    out = np.full((n, len(names)), np.nan)
    for j, name in enumerate(names[: -len(TASK_FEATURES)]):
        if name in frame.columns:
            out[:, j] = frame[name].to_numpy(dtype=np.float64)
    out[:, -3] = frame["priority"].to_numpy(dtype=np.float64)
    out[:, -2], out[:, -1] = _hour_features(frame["timestamp"].to_numpy(dtype=np.float64))
    return _transform(names, out)


def request_context(context: Mapping[str, Any] | None, masters: Sequence[str], now: float | None = None) -> np.ndarray:
    """``(F,)`` raw features of one live request.

    ``context`` (all optional)::

        {"priority": 2, "timestamp": "2026-11-20T09:30:00Z",
         "workers": {"math": {"success_rate": 0.9, "queue_length": 3, "latency_ms": 800}, ...}}

    The time of day is the request's ``timestamp``, else ``now`` (the decision happens now).
    """
    names = context_feature_names(masters)
    out = np.full(len(names), np.nan)
    context = dict(context or {})
    unknown = set(context) - {"priority", "timestamp", "workers"}
    if unknown:
        raise InputError(f"context has unknown keys {sorted(unknown)}; allowed: priority, timestamp, workers.")
    workers = context.get("workers") or {}
    if not isinstance(workers, Mapping):
        raise InputError("context.workers must map a master name to {success_rate, queue_length, latency_ms}.")
    for worker, metrics in workers.items():
        if worker not in masters:
            raise InputError(f"context.workers names {worker!r}, which is not a master ({', '.join(masters)}).")
        if not isinstance(metrics, Mapping) or set(metrics) - set(WORKER_METRICS):
            raise InputError(f"context.workers.{worker} must be a mapping with keys among {', '.join(WORKER_METRICS)}.")
        for metric, value in metrics.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"context.workers.{worker}.{metric}={value!r} must be a finite number >= 0.")
            out[names.index(ctx_column(worker, metric))] = float(value)
    priority = context.get("priority")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, (int, float)) or not math.isfinite(priority):
            raise InputError(f"context.priority={priority!r} must be a finite number.")
        out[-3] = float(priority)
    ts = context.get("timestamp")
    try:
        t = parse_timestamp(ts) if ts is not None else (now if now is not None else datetime.now(timezone.utc).timestamp())
    except RecordError as e:
        raise InputError(f"context.timestamp={ts!r} is not an ISO-8601 time or epoch seconds ({e}).") from None
    sin, cos = _hour_features(np.array([t], dtype=np.float64))
    out[-2], out[-1] = sin[0], cos[0]
    return _transform(names, out[None, :])[0]


class ContextEncoder(nn.Module):
    """Standardize ``(B, F)`` raw features (NaN → 0, unobserved features off) and map them to ``(B, 1, D)``.

    Buffers ``mean``, ``std`` and ``observed`` are fitted on the training set by
    :meth:`fit_standardization` and saved with the router's weights.
    """

    def __init__(self, num_features: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.num_features = num_features
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.register_buffer("observed", torch.zeros(num_features))
        self.net = nn.Sequential(nn.Linear(num_features, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))

    @torch.no_grad()
    def fit_standardization(self, raw: np.ndarray, passthrough: Sequence[bool] | None = None) -> None:
        """Fit on ``(N, F)`` training features (NaN = missing).

        ``passthrough`` marks features already on a unit scale (the time-of-day sine and cosine):
        they keep mean 0 and std 1, because a day's narrow slice in training would otherwise turn
        every other hour into an extreme value.
        """
        x = np.asarray(raw, dtype=np.float64)
        finite = np.isfinite(x)
        n = finite.sum(0)
        mean = np.where(n > 0, np.nansum(np.where(finite, x, 0.0), 0) / np.maximum(n, 1), 0.0)
        var = np.where(n > 0, np.nansum(np.where(finite, (x - mean) ** 2, 0.0), 0) / np.maximum(n, 1), 1.0)
        std = np.sqrt(var)
        std = np.where(std > 1e-8, std, 1.0)
        # a feature that never varied in training carries no learnable signal either
        observed = (n > 0) & (np.sqrt(var) > 1e-8)
        if passthrough is not None:
            keep = np.asarray(passthrough, dtype=bool)
            mean, std = np.where(keep, 0.0, mean), np.where(keep, 1.0, std)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))
        self.observed.copy_(torch.as_tensor(observed, dtype=torch.float32))

    def standardize(self, raw: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` → standardized and clipped to ``[-CLIP, CLIP]``, NaN and unobserved features 0.

        Clipping bounds what a value far outside the training range can do to a decision.
        """
        z = ((raw - self.mean) / self.std).clamp(-CLIP, CLIP)
        return torch.nan_to_num(z, nan=0.0) * self.observed

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if raw.dim() != 2 or raw.shape[1] != self.num_features:
            raise InputError(f"context features must be (B, {self.num_features}); got {tuple(raw.shape)}.")
        return self.net(self.standardize(raw.float()))[:, None, :]  # (B, 1, D)
