"""Routing data: read routing logs, worker metrics and labeled files into one training-set frame.

Every JSONL line is validated; a bad line is reported with its line number and the reason, never
dropped silently (:class:`IngestReport` keeps them, :meth:`IngestReport.raise_if_bad` refuses to go
on unless the caller explicitly allows skipping them). Records are deduplicated by task id, keeping
the newest (by timestamp, then by line). The result is a pandas frame with the columns of
:data:`COLUMNS` plus one ``ctx__<worker>__<metric>`` column per worker metric, written as parquet.

Routing-log line (only ``task_id``, ``routed_to`` and some text are required)::

    {"task_id": "T-17", "task_title": "Fix flaky test", "task_type": "bug", "description": "...",
     "routed_to": "ci_cd", "rule_used": "ci-keywords", "confidence": 0.7,
     "timestamp": "2026-11-20T09:30:00Z", "priority": 2,
     "success": true, "completion_time_minutes": 42.0, "tokens_used": 5300, "user_corrected_to": null}

Worker-metrics line::

    {"timestamp": "2026-11-20T09:00:00Z", "worker": "ci_cd", "success_rate": 0.91,
     "queue_length": 3, "latency_ms": 850}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cortex._atomic import write_parquet_atomic
from cortex.errors import DataError

# columns of every training-set frame (context columns ctx__<worker>__<metric> come after them)
COLUMNS = (
    "task_id",  # str, unique
    "text",  # str, what the router reads
    "label",  # str, the master that should have handled the task (the correction, if any)
    "outcome_master",  # str, the master that did handle it: success/minutes/tokens are its outcomes
    "success",  # float 1/0, NaN when unknown
    "minutes",  # float > 0, NaN when unknown
    "tokens",  # float >= 0, NaN when unknown
    "timestamp",  # float seconds since the epoch (UTC), NaN when unknown
    "priority",  # float, NaN when unknown
    "source_line",  # int, line number in the file it came from
)
TOPIC = "topic"  # optional str column: a finer label owned by one master (e.g. an exam subject)
WORKER_METRICS = ("success_rate", "queue_length", "latency_ms")
CTX_PREFIX = "ctx__"


def ctx_column(worker: str, metric: str) -> str:
    """Column name of one worker metric in a training-set frame."""
    return f"{CTX_PREFIX}{worker}__{metric}"


@dataclass
class LineProblem:
    """One rejected input line: 1-based ``line`` number in ``path`` and why."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class IngestReport:
    """What reading a file produced.

    Attributes:
        frame: the valid, deduplicated records (columns :data:`COLUMNS` + context columns).
        problems: every rejected line, with its number and reason.
        n_lines: non-blank lines read.
        n_duplicates: valid records dropped because a newer one had the same task id.
    """

    frame: pd.DataFrame
    problems: list[LineProblem] = field(default_factory=list)
    n_lines: int = 0
    n_duplicates: int = 0

    def raise_if_bad(self, allow_bad: bool = False, show: int = 20) -> None:
        """Raise :class:`DataError` listing bad lines unless ``allow_bad``; also when nothing is left."""
        if self.problems and not allow_bad:
            listed = "\n".join(f"  {p}" for p in self.problems[:show])
            more = f"\n  ... and {len(self.problems) - show} more" if len(self.problems) > show else ""
            raise DataError(
                f"{len(self.problems)} of {self.n_lines} lines are invalid:\n{listed}{more}\n"
                f"Fix or remove them, or pass --skip-bad to use the {len(self.frame)} valid records."
            )
        if len(self.frame) == 0:
            raise DataError("No valid records were read; check the file and the field names (--text-field, --label-field).")

    def summary(self) -> dict[str, int]:
        return {"lines": self.n_lines, "records": len(self.frame), "bad_lines": len(self.problems),
                "duplicates": self.n_duplicates}


class RecordError(ValueError):
    """A line-level problem; its message becomes a :class:`LineProblem`."""


# ------------------------------------------------------------------------------------------ parsing
def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """``(line_number, object, None)`` per JSON-object line, or ``(line_number, None, reason)``.

    Blank lines are skipped; everything else is either an object or a reported problem.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"Data file {str(p)!r} does not exist. Pass an existing JSONL file.")
    with open(p, encoding="utf-8", errors="replace") as f:
        for i, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                yield i, None, f"not valid JSON ({e.msg} at column {e.colno})"
                continue
            if not isinstance(obj, dict):
                yield i, None, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield i, obj, None


def _text(obj: dict, key: str, required: bool = False) -> str | None:
    v = obj.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise RecordError(f"{key!r} is missing or empty")
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise RecordError(f"{key!r} must be a string; got {type(v).__name__} {v!r}")
    return str(v).strip()


def _number(obj: dict, key: str, lo: float | None = None, lo_open: bool = False, hi: float | None = None) -> float:
    v = obj.get(key)
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise RecordError(f"{key!r} must be a finite number; got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise RecordError(f"{key!r}={v} must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and v > hi:
        raise RecordError(f"{key!r}={v} must be <= {hi}")
    return float(v)


def _boolean(obj: dict, key: str) -> float:
    v = obj.get(key)
    if v is None:
        return math.nan
    if isinstance(v, bool) or (isinstance(v, (int, float)) and v in (0, 1)):
        return float(v)
    raise RecordError(f"{key!r} must be true, false, 0, 1 or null; got {v!r}")


def parse_timestamp(value: Any, key: str = "timestamp") -> float:
    """ISO-8601 string (``Z`` or offset; naive means UTC) or epoch seconds → epoch seconds; None → NaN."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise RecordError(f"{key!r} must be an ISO-8601 string or epoch seconds; got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise RecordError(f"{key!r} must be finite; got {value!r}")
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise RecordError(f"{key!r}={value!r} is not an ISO-8601 time such as 2026-11-20T09:30:00Z") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    raise RecordError(f"{key!r} must be an ISO-8601 string or epoch seconds; got {type(value).__name__}")


def _check_master(key: str, value: str | None, masters: Sequence[str] | None) -> None:
    if value is not None and masters is not None and value not in masters:
        raise RecordError(f"{key}={value!r} is not one of the masters ({', '.join(masters)}); add it to the masters "
                   "config or fix the line")


def task_text(title: str | None, task_type: str | None = None, description: str | None = None) -> str:
    """What the router reads for a task: ``"<task_type>: <title>\n<description>"`` (present parts).

    Training (from logs) and serving (from requests) both build the text here, so they agree.
    """
    head = f"{task_type}: {title}" if task_type and title else (title or (f"{task_type}:" if task_type else ""))
    return "\n".join(part for part in (head, description) if part)


def log_record_to_row(obj: dict[str, Any], masters: Sequence[str] | None = None) -> dict[str, Any]:
    """Validate one routing-log object and turn it into a training-set row (raises ``RecordError``).

    The text is ``"<task_type>: <task_title>\\n<description>"`` (parts that are present); the label
    is ``user_corrected_to`` when the user corrected the route, else ``routed_to``.
    """
    task_id = _text(obj, "task_id", required=True)
    title, ttype, desc = _text(obj, "task_title"), _text(obj, "task_type"), _text(obj, "description")
    if title is None and desc is None:
        raise RecordError("needs a non-empty 'task_title' or 'description' (the text the router reads)")
    text = task_text(title, ttype, desc)
    routed = _text(obj, "routed_to", required=True)
    corrected = _text(obj, "user_corrected_to")
    _check_master("routed_to", routed, masters)
    _check_master("user_corrected_to", corrected, masters)
    _text(obj, "rule_used")
    _number(obj, "confidence", lo=0.0, hi=1.0)
    return {
        "task_id": task_id, "text": text, "label": corrected or routed, "outcome_master": routed,
        "success": _boolean(obj, "success"),
        "minutes": _number(obj, "completion_time_minutes", lo=0.0, lo_open=True),
        "tokens": _number(obj, "tokens_used", lo=0.0),
        "timestamp": parse_timestamp(obj.get("timestamp")),
        "priority": _number(obj, "priority"),
    }


def labeled_record_to_row(
    obj: dict[str, Any], *, text_field: str, label_field: str, success_field: str | None = None,
    id_field: str | None = None, minutes_field: str | None = None, tokens_field: str | None = None,
    time_field: str | None = None, masters: Sequence[str] | None = None, line: int = 0,
    topic_field: str | None = None,
) -> dict[str, Any]:
    """Validate one object of any labeled JSONL file (chosen field names) into a training-set row."""
    text = _text(obj, text_field, required=True)
    label = _text(obj, label_field, required=True)
    _check_master(label_field, label, masters)
    task_id = _text(obj, id_field, required=True) if id_field else f"line-{line}"
    return {
        "task_id": task_id, "text": text, "label": label, "outcome_master": label,
        "success": _boolean(obj, success_field) if success_field else math.nan,
        "minutes": _number(obj, minutes_field, lo=0.0, lo_open=True) if minutes_field else math.nan,
        "tokens": _number(obj, tokens_field, lo=0.0) if tokens_field else math.nan,
        "timestamp": parse_timestamp(obj.get(time_field), time_field) if time_field else math.nan,
        "priority": math.nan,
        **({TOPIC: _text(obj, topic_field, required=True)} if topic_field else {}),
    }


# ------------------------------------------------------------------------------------------ frames
def empty_frame() -> pd.DataFrame:
    """A training-set frame with no rows and the right dtypes."""
    return _frame([])


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    extra = [TOPIC] if any(TOPIC in r for r in rows) else []
    df = pd.DataFrame(rows, columns=[*COLUMNS, *extra])
    for c in ("success", "minutes", "tokens", "timestamp", "priority"):
        df[c] = df[c].astype(np.float64)
    df["source_line"] = df["source_line"].astype(np.int64)
    for c in ("task_id", "text", "label", "outcome_master"):
        df[c] = df[c].astype(object)
    return df


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep one row per ``task_id``: the newest by timestamp, ties (or no timestamps) by later line.

    Returns the frame (in its original order) and how many rows were dropped.
    """
    if frame.empty:
        return frame, 0
    order = frame.assign(_ts=frame["timestamp"].fillna(-np.inf), _pos=np.arange(len(frame)))
    keep = order.sort_values(["_ts", "_pos"], kind="stable").drop_duplicates("task_id", keep="last")
    out = frame.loc[sorted(keep.index)] if frame.index.is_unique else frame.iloc[np.sort(keep["_pos"].to_numpy())]
    return out.reset_index(drop=True), len(frame) - len(out)


def _check_field_names(path: str | os.PathLike, fields: dict[str, str | None]) -> None:
    """Fail early, naming the field, when a chosen field appears in none of the first lines."""
    seen: set[str] = set()
    for n, (_, obj, _) in enumerate(iter_jsonl(path)):
        if obj is not None:
            seen.update(obj)
        if n >= 50:
            break
    for flag, name in fields.items():
        if name is not None and seen and name not in seen:
            from cortex.errors import closest

            near = closest(name, seen)
            hint = f" Did you mean {', '.join(repr(c) for c in near)}?" if near else ""
            raise DataError(
                f"{flag} {name!r} is not a field of {str(path)!r}.{hint} Fields present: {', '.join(sorted(seen))}."
            )


def ingest_labeled(
    path: str | os.PathLike, *, text_field: str = "text", label_field: str = "label",
    success_field: str | None = None, id_field: str | None = "auto", minutes_field: str | None = None,
    tokens_field: str | None = None, time_field: str | None = None, masters: Sequence[str] | None = None,
    topic_field: str | None = None,
) -> IngestReport:
    """Read any JSONL file whose lines hold a text and a label (plus optional outcome fields).

    ``topic_field`` names a finer label (e.g. ``subject``) owned by one master each; a router trained
    with it learns the topics and sums their probabilities per master.

    ``id_field="auto"`` uses ``id`` or ``task_id`` when the file has one (so duplicates collapse),
    else the line number.
    """
    if id_field == "auto":
        first = next((obj for _, obj, _ in iter_jsonl(path) if obj is not None), {})
        id_field = next((k for k in ("task_id", "id") if k in first), None)
    _check_field_names(path, {"--text-field": text_field, "--label-field": label_field,
                              "--success-field": success_field, "--id-field": id_field,
                              "--minutes-field": minutes_field, "--tokens-field": tokens_field,
                              "--time-field": time_field, "--topic-field": topic_field})
    rows, problems, n = [], [], 0
    for line, obj, err in iter_jsonl(path):
        n += 1
        if err is not None:
            problems.append(LineProblem(str(path), line, err))
            continue
        try:
            row = labeled_record_to_row(
                obj, text_field=text_field, label_field=label_field, success_field=success_field,
                id_field=id_field, minutes_field=minutes_field, tokens_field=tokens_field,
                time_field=time_field, masters=masters, line=line, topic_field=topic_field,
            )
        except RecordError as e:
            problems.append(LineProblem(str(path), line, str(e)))
            continue
        rows.append({**row, "source_line": line})
    frame, dups = deduplicate(_frame(rows))
    return IngestReport(frame=frame, problems=problems, n_lines=n, n_duplicates=dups)


def ingest_logs(
    path: str | os.PathLike, *, masters: Sequence[str] | None = None,
    metrics_path: str | os.PathLike | None = None,
) -> IngestReport:
    """Read a routing-log JSONL file (see the module docstring), optionally joined with worker metrics."""
    rows, problems, n = [], [], 0
    for line, obj, err in iter_jsonl(path):
        n += 1
        if err is not None:
            problems.append(LineProblem(str(path), line, err))
            continue
        try:
            rows.append({**log_record_to_row(obj, masters), "source_line": line})
        except RecordError as e:
            problems.append(LineProblem(str(path), line, str(e)))
    frame, dups = deduplicate(_frame(rows))
    if metrics_path is not None:
        metrics, metric_problems = read_worker_metrics(metrics_path, masters)
        problems.extend(metric_problems)
        frame = attach_worker_metrics(frame, metrics)
    return IngestReport(frame=frame, problems=problems, n_lines=n, n_duplicates=dups)


def read_worker_metrics(
    path: str | os.PathLike, masters: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, list[LineProblem]]:
    """Per-worker metrics history: frame ``(timestamp, worker, success_rate, queue_length, latency_ms)``
    sorted by time, and the rejected lines."""
    rows, problems = [], []
    for line, obj, err in iter_jsonl(path):
        if err is not None:
            problems.append(LineProblem(str(path), line, err))
            continue
        try:
            worker = _text(obj, "worker", required=True)
            _check_master("worker", worker, masters)
            ts = parse_timestamp(obj.get("timestamp"))
            if math.isnan(ts):
                raise RecordError("'timestamp' is required in worker metrics")
            row = {"timestamp": ts, "worker": worker,
                   "success_rate": _number(obj, "success_rate", lo=0.0, hi=1.0),
                   "queue_length": _number(obj, "queue_length", lo=0.0),
                   "latency_ms": _number(obj, "latency_ms", lo=0.0)}
            if all(math.isnan(row[m]) for m in WORKER_METRICS):
                raise RecordError(f"has none of the metrics {', '.join(WORKER_METRICS)}")
        except RecordError as e:
            problems.append(LineProblem(str(path), line, str(e)))
            continue
        rows.append(row)
    df = pd.DataFrame(rows, columns=["timestamp", "worker", *WORKER_METRICS])
    return df.sort_values("timestamp", kind="stable").reset_index(drop=True), problems


def attach_worker_metrics(frame: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Add ``ctx__<worker>__<metric>``: each worker's latest metrics at or before the task's time.

    Tasks without a timestamp, or before a worker's first report, get NaN (filled with training
    means when featurized), never a value from the future.
    """
    out = frame.copy()
    for worker, hist in metrics.groupby("worker", sort=True):
        hist = hist.sort_values("timestamp")
        times = hist["timestamp"].to_numpy()
        idx = np.searchsorted(times, out["timestamp"].to_numpy(), side="right") - 1
        valid = (idx >= 0) & np.isfinite(out["timestamp"].to_numpy())
        for m in WORKER_METRICS:
            values = hist[m].to_numpy()
            col = np.full(len(out), np.nan)
            col[valid] = values[idx[valid]]
            out[ctx_column(str(worker), m)] = col
    return out


def concat_frames(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Stack training-set frames (later ones win on duplicate task ids), keeping every context column."""
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return empty_frame()
    df = pd.concat(frames, ignore_index=True, sort=False)
    df = df.assign(_pos=np.arange(len(df)))
    df = df.drop_duplicates("task_id", keep="last").sort_values("_pos").drop(columns="_pos")
    return df.reset_index(drop=True)


# ------------------------------------------------------------------------------------------ parquet
def write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the frame as parquet atomically (temp file, fsync, rename)."""
    return write_parquet_atomic(frame, path)


def read_training_set(path: str | os.PathLike) -> pd.DataFrame:
    """Read a parquet training set written by :func:`write_parquet`, checking its columns."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"Training set {str(p)!r} does not exist. Build one with: cortex route ingest LOGS.jsonl --out {p}")
    df = pd.read_parquet(p)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{str(p)!r} lacks the columns {', '.join(missing)}; rebuild it with: cortex route ingest")
    return df


def load_any(path: str | os.PathLike, **labeled_kwargs: Any) -> IngestReport:
    """A parquet training set, a routing-log JSONL (has ``routed_to``), or a labeled JSONL file.

    ``labeled_kwargs`` (text_field, label_field, ...) are used for labeled files and ignored for
    routing logs, whose field names are fixed.
    """
    p = Path(path)
    if p.suffix == ".parquet":
        df = read_training_set(p)
        return IngestReport(frame=df, n_lines=len(df))
    first = next((obj for _, obj, _ in iter_jsonl(p) if obj is not None), None)
    masters = labeled_kwargs.get("masters")
    if first is not None and "routed_to" in first and labeled_kwargs.get("label_field") in (None, "routed_to"):
        return ingest_logs(p, masters=masters, metrics_path=labeled_kwargs.get("metrics_path"))
    kwargs = {k: v for k, v in labeled_kwargs.items() if k != "metrics_path" and v is not None}
    return ingest_labeled(p, **kwargs)
