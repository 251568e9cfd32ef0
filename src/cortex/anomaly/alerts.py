"""Alerts: what a detector raises about a worker, written one JSON object per line to a sink."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cortex.errors import AnomalyError


@dataclass
class Alert:
    """One alert.

    ``kind`` is ``anomaly`` (a worker's episode of anomalous rows began), ``recovered`` (it ended)
    or ``bad_row`` (a row that could not be read; ``detail`` says why).
    """

    kind: str
    worker: str
    row: int
    time: Any = None
    score: float | None = None
    threshold: float | None = None
    top_feature: str | None = None
    detector: str = ""
    detail: str = ""
    values: dict[str, float] = field(default_factory=dict)
    raised_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


class JsonlAlertSink:
    """Appends alerts to a JSONL file (each line written with one ``O_APPEND`` write and fsynced)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AnomalyError(f"Cannot create the folder of alert file {str(self.path)!r} ({e.strerror}); pick a writable path.") from e
        self.count = 0

    def emit(self, alert: Alert) -> None:
        line = (json.dumps(asdict(alert), ensure_ascii=False, default=str) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.count += 1
