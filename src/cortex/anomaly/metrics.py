"""Worker metric rows: reading, validating, and the fields the detectors look at.

A row is one finished task of one worker: ``latency_ms`` (time to first token), ``error_rate``
(share of failed calls in the task, 0..1), ``tokens`` (tokens produced), ``duration_s`` (wall
time) and ``success`` (0/1 or true/false). ``worker`` (default ``"default"``) and ``time`` are
optional. Files are JSON lines (``.jsonl``) or CSV with a header.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cortex.errors import AnomalyError

FIELDS: tuple[str, ...] = ("latency_ms", "error_rate", "tokens", "duration_s", "success")


@dataclass(frozen=True)
class MetricRow:
    """One validated row; ``values`` follow :data:`FIELDS`."""

    worker: str
    time: str | float | None
    values: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "time": self.time, **dict(zip(FIELDS, self.values))}


def _number(field: str, raw: Any, where: str) -> float:
    if isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str) and field == "success" and raw.strip().lower() in ("true", "false"):
        return float(raw.strip().lower() == "true")
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise AnomalyError(f"{where}: {field}={raw!r} is not a number; write it as a plain number.") from None
    if not math.isfinite(v):
        raise AnomalyError(f"{where}: {field}={raw!r} is not finite; drop the row or fix the value.")
    return v


def parse_row(obj: Any, where: str) -> MetricRow:
    """Validate one raw row (a dict) → :class:`MetricRow`; ``where`` names it in errors (``file:line``)."""
    if not isinstance(obj, dict):
        raise AnomalyError(f"{where}: expected a JSON object with {', '.join(FIELDS)}; got {type(obj).__name__}.")
    missing = [f for f in FIELDS if obj.get(f) in (None, "")]
    if missing:
        raise AnomalyError(
            f"{where}: missing field(s) {', '.join(missing)}. Every row needs {', '.join(FIELDS)}; "
            "fix the producer, or pass --skip-bad to leave such rows out (they are counted)."
        )
    vals = tuple(_number(f, obj[f], where) for f in FIELDS)
    lat, err, tok, dur, ok = vals
    if min(lat, tok, dur) < 0:
        raise AnomalyError(f"{where}: latency_ms, tokens and duration_s must be >= 0; got {lat}, {tok}, {dur}.")
    if not 0.0 <= err <= 1.0:
        raise AnomalyError(f"{where}: error_rate={err} must be a share in [0, 1] (not a percentage).")
    if ok not in (0.0, 1.0):
        raise AnomalyError(f"{where}: success={obj['success']!r} must be 0/1 or true/false.")
    return MetricRow(str(obj.get("worker", "default")), obj.get("time"), vals)


@dataclass
class MetricFile:
    """Rows read from a file, and the rows left out with ``skip_bad`` (``(where, problem)``)."""

    rows: list[MetricRow]
    skipped: list[tuple[str, str]]


def _raw_rows(path: Path):
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                for i, rec in enumerate(csv.DictReader(f), start=2):
                    yield f"{path.name}:{i}", rec
        else:
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        yield f"{path.name}:{i}", json.loads(line)
                    except json.JSONDecodeError as e:
                        yield f"{path.name}:{i}", AnomalyError(f"{path.name}:{i}: not valid JSON ({e.msg}).")
    except FileNotFoundError:
        raise AnomalyError(f"Metrics file {str(path)!r} does not exist; pass a .jsonl or .csv file of worker metrics.") from None
    except UnicodeDecodeError as e:
        raise AnomalyError(f"Metrics file {str(path)!r} is not UTF-8 text ({e.reason}); export it as UTF-8 JSONL or CSV.") from None


def read_metrics(path: str | Path, skip_bad: bool = False) -> MetricFile:
    """Read and validate a metrics file; the first bad row raises :class:`AnomalyError` unless ``skip_bad``."""
    path = Path(path)
    rows, skipped = [], []
    for where, raw in _raw_rows(path):
        try:
            if isinstance(raw, AnomalyError):
                raise raw
            rows.append(parse_row(raw, where))
        except AnomalyError as e:
            if not skip_bad:
                raise
            skipped.append((where, str(e)))
    if not rows:
        raise AnomalyError(f"No usable metric rows in {str(path)!r} ({len(skipped)} bad). It needs rows with {', '.join(FIELDS)}.")
    return MetricFile(rows, skipped)


def by_worker(rows: list[MetricRow]) -> dict[str, list[int]]:
    """Row indices of each worker, in file order (each worker's stream is scored on its own)."""
    out: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        out.setdefault(r.worker, []).append(i)
    return out


def values_array(rows: list[MetricRow]) -> np.ndarray:
    """``(N, F)`` float64 raw values of ``rows`` in :data:`FIELDS` order."""
    return np.array([r.values for r in rows], dtype=np.float64).reshape(len(rows), len(FIELDS))
