"""Live monitoring: feed rows one at a time, alert when a worker's episode of anomalies begins and ends.

One alert per episode, not per row: a latency spike makes every window that contains it score
high, and an operator wants to hear about the spike once (and again when it is over).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cortex._validate import Problems, check_positive
from cortex.anomaly.alerts import Alert, JsonlAlertSink
from cortex.anomaly.detector import Detector, RowScore
from cortex.anomaly.metrics import FIELDS, MetricRow, parse_row
from cortex.errors import AnomalyError


@dataclass
class EpisodeTracker:
    """Turns per-row scores into episode alerts: one when a worker turns anomalous, one when it recovers.

    ``confirm_after`` anomalous rows in a row start an episode (2 trades a row of delay for fewer
    alerts on a single noisy row); ``recover_after`` normal rows in a row end it.
    """

    detector_kind: str
    recover_after: int = 3
    confirm_after: int = 1
    _in_episode: dict[str, bool] = field(default_factory=dict)
    _calm: dict[str, int] = field(default_factory=dict)
    _hot: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = Problems()
        check_positive("recover_after", self.recover_after, problems)
        check_positive("confirm_after", self.confirm_after, problems)
        problems.raise_if_any("episode tracker")

    def update(self, s: RowScore, values: tuple[float, ...]) -> Alert | None:
        """The alert that score ``s`` of a row with ``values`` raises, if any."""
        w = s.worker
        if s.anomalous:
            self._calm[w] = 0
            self._hot[w] = self._hot.get(w, 0) + 1
            if not self._in_episode.get(w) and self._hot[w] >= self.confirm_after:
                self._in_episode[w] = True
                return Alert("anomaly", w, s.row, s.time, s.score, s.threshold, s.top_feature,
                             self.detector_kind, values=dict(zip(FIELDS, values)))
        elif self._in_episode.get(w):
            self._hot[w] = 0
            self._calm[w] = self._calm.get(w, 0) + 1
            if self._calm[w] >= self.recover_after:
                self._in_episode[w] = False
                return Alert("recovered", w, s.row, s.time, s.score, s.threshold, None, self.detector_kind)
        else:
            self._hot[w] = 0
        return None


def episode_alerts(scores: list[RowScore], rows: list[MetricRow], detector_kind: str,
                   recover_after: int = 3, confirm_after: int = 1) -> list[Alert]:
    """Episode alerts of scores computed in batch (:func:`~cortex.anomaly.detector.score_rows`), in row order."""
    tracker = EpisodeTracker(detector_kind, recover_after, confirm_after)
    return [a for s in sorted(scores, key=lambda s: s.row)
            if (a := tracker.update(s, rows[s.row].values)) is not None]


@dataclass
class StreamMonitor:
    """Keeps the last ``detector.context`` rows per worker and scores each new row as it arrives."""

    detector: Detector
    sink: JsonlAlertSink | None = None
    recover_after: int = 3
    confirm_after: int = 1
    rows_seen: int = 0
    bad_rows: int = 0
    alerts: list[Alert] = field(default_factory=list)
    _buffers: dict[str, deque] = field(default_factory=dict)
    _tracker: EpisodeTracker | None = None

    def emit(self, alert: Alert) -> None:
        """Record ``alert`` and write it to the sink."""
        self.alerts.append(alert)
        if self.sink is not None:
            self.sink.emit(alert)

    def push(self, row: MetricRow) -> RowScore | None:
        """Score ``row`` against its worker's recent rows; returns None until there is enough history."""
        if self._tracker is None:
            self._tracker = EpisodeTracker(self.detector.kind, self.recover_after, self.confirm_after)
        i = self.rows_seen
        self.rows_seen += 1
        buf = self._buffers.setdefault(row.worker, deque(maxlen=self.detector.context))
        buf.append(row.values)
        scores, top = self.detector.score_array(np.array(buf, dtype=np.float64), row.worker)
        if not np.isfinite(scores[-1]):
            return None
        s = RowScore(i, row.worker, row.time, float(scores[-1]), float(self.detector.threshold),
                     bool(scores[-1] > self.detector.threshold), FIELDS[int(top[-1])])
        alert = self._tracker.update(s, row.values)
        if alert is not None:
            self.emit(alert)
        return s

    def push_raw(self, obj: object, where: str) -> RowScore | None:
        """Parse and push one raw row; a bad row becomes a ``bad_row`` alert instead of stopping the monitor."""
        try:
            row = parse_row(obj, where)
        except AnomalyError as e:
            self.bad_rows += 1
            self.emit(Alert("bad_row", str(obj.get("worker", "?")) if isinstance(obj, dict) else "?",
                             self.rows_seen, detector=self.detector.kind, detail=str(e)))
            return None
        return self.push(row)


def watch_file(path: str | Path, monitor: StreamMonitor, *, follow: bool = True, poll_s: float = 0.5,
               max_seconds: float | None = None, on_score: Callable[[RowScore], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> int:
    """Feed the JSON lines of ``path`` to ``monitor``, then (if ``follow``) keep reading as it grows.

    A partial last line waits for its newline; a file that shrinks (rotated or truncated) is read
    again from its start. Stops at the end of the file when not following, after ``max_seconds``,
    or when ``should_stop()`` is true. Returns the number of lines read.
    """
    path = Path(path)
    if not path.exists():
        raise AnomalyError(f"Metrics file {str(path)!r} does not exist; start the worker's metric log first or fix the path.")
    start = time.monotonic()
    pos, line_no, pending = 0, 0, b""

    def feed(raw: bytes) -> None:
        nonlocal line_no
        line_no += 1
        if not raw.strip():
            return
        where = f"{path.name}:{line_no}"
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            monitor.bad_rows += 1
            monitor.emit(Alert("bad_row", "?", monitor.rows_seen, detector=monitor.detector.kind,
                               detail=f"{where}: not valid JSON ({e})."))
            return
        s = monitor.push_raw(obj, where)
        if s is not None and on_score:
            on_score(s)

    while True:
        size = path.stat().st_size
        if size < pos:  # rotated or truncated: start over
            pos, pending = 0, b""
        if size > pos:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read(size - pos)
            pos += len(data)
            *lines, pending = (pending + data).split(b"\n")
            for raw in lines:
                feed(raw)
        if not follow:
            if pending.strip():  # a last line without its newline is complete once we stop reading
                feed(pending)
            return line_no
        if (should_stop and should_stop()) or (max_seconds is not None and time.monotonic() - start >= max_seconds):
            return line_no
        time.sleep(poll_s)
