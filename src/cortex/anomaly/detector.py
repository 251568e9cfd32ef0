"""Detectors over worker metric streams, their shared scoring, and saving/loading them.

A detector scores each row of one worker's stream from that row and the rows before it (never
after, so the same scores come out live). Rows without enough history get no score. Each kind of
detector is its own class, found by the ``kind`` string saved with it in :data:`DETECTORS`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from cortex.anomaly.metrics import FIELDS, MetricRow, by_worker, values_array
from cortex.errors import AnomalyError
from cortex.hub.paths import cortex_home, validate_name

STATE_FILE = "detector.json"


@dataclass
class RowScore:
    """The score of one row: ``row`` indexes the rows that were scored.

    ``top_feature`` is the metric that contributed most (the one to look at first).
    """

    row: int
    worker: str
    time: Any
    score: float
    threshold: float
    anomalous: bool
    top_feature: str


class Detector(Protocol):
    """What :func:`score_rows` and the stream monitor need from a detector."""

    kind: ClassVar[str]
    threshold: float

    @property
    def context(self) -> int:
        """Rows (the current one included) needed before a row can be scored."""
        ...

    def score_array(self, values: np.ndarray, worker: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw values ``(N, F)`` of one worker (``worker``, its name) → scores ``(N,)`` (NaN without enough history) and
        the index of the top feature per row ``(N,)``."""
        ...

    def state(self) -> dict[str, Any]:
        """JSON state written to ``detector.json`` (plus any weights saved by :meth:`save_files`)."""
        ...

    def save_files(self, folder: Path) -> list[str]:
        """Write weights or other files next to ``detector.json``; return their names."""
        ...


def score_rows(detector: Detector, rows: list[MetricRow]) -> list[RowScore]:
    """Score every row that has enough history in its worker's stream, in input order."""
    out: list[RowScore] = []
    for worker, idx in by_worker(rows).items():
        scores, top = detector.score_array(values_array([rows[i] for i in idx]), worker)
        for j, i in enumerate(idx):
            if np.isfinite(scores[j]):
                out.append(RowScore(i, worker, rows[i].time, float(scores[j]), float(detector.threshold),
                                    bool(scores[j] > detector.threshold), FIELDS[int(top[j])]))
    out.sort(key=lambda s: s.row)
    return out


def default_detector_dir(name: str) -> Path:
    """``$CORTEX_HOME/anomaly/<name>``."""
    return cortex_home() / "anomaly" / validate_name(name, "detector name")


def save_detector(detector: Detector, folder: str | Path) -> Path:
    """Write ``detector`` to ``folder`` atomically: built in a sibling temp folder, then swapped in."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        detector.save_files(tmp)
        (tmp / STATE_FILE).write_text(json.dumps({"kind": detector.kind, **detector.state()}, indent=1),
                                      encoding="utf-8")
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_detector(folder: str | Path) -> Detector:
    """Load a detector saved by :func:`save_detector` (its kind picks the class)."""
    from cortex.anomaly.autoencoder import AutoencoderDetector
    from cortex.anomaly.baseline import RollingZScore

    folder = Path(folder)
    state_path = folder / STATE_FILE
    if not state_path.exists():
        raise AnomalyError(
            f"No detector in {str(folder)!r} (no {STATE_FILE}). Train one with: cortex anomaly train METRICS --name NAME"
        )
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnomalyError(f"{str(state_path)!r} is corrupt ({e}); retrain the detector.") from e
    kinds = {cls.kind: cls for cls in (AutoencoderDetector, RollingZScore)}
    kind = state.get("kind")
    if kind not in kinds:
        raise AnomalyError(f"Detector kind {kind!r} in {str(folder)!r} is unknown; known kinds: {', '.join(kinds)}.")
    if state.get("fields", list(FIELDS)) != list(FIELDS):
        raise AnomalyError(f"Detector in {str(folder)!r} was trained on fields {state.get('fields')}, not {list(FIELDS)}; retrain it.")
    return kinds[kind].from_state(state, folder)
