"""Synthetic worker metric streams with labelled, injected anomalies (for the benchmark, tests, demos).

Normal behaviour per worker: a load cycle slowly modulates latency; tokens are log-normal;
duration follows latency plus tokens at the worker's speed; calls fail now and then (error rate
a few percent, and a task fails when its error rate is high). Injected events:

- ``spike``: latency × 4-8 for 2-6 rows (a stalled backend).
- ``drift``: latency and duration creep up to × 3 over 40-80 rows and stay (a leak, a degraded node).
- ``error_burst``: error rate jumps to 0.4-0.8 and most tasks fail, for 3-10 rows.
- ``token_blowup``: tokens × 6-12 for 2-6 rows (a prompt loop, runaway generation).
- ``dropout``: the worker returns empty results: tokens near 0, duration tiny, task failed, 3-10 rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cortex._atomic import atomic_write
from cortex.anomaly.metrics import FIELDS, MetricRow
from cortex.errors import ConfigError

EVENT_KINDS = ("spike", "drift", "error_burst", "token_blowup", "dropout")


@dataclass
class Event:
    """An injected anomaly: rows ``start`` to ``end`` inclusive of one worker's stream."""

    kind: str
    worker: str
    start: int
    end: int


def normal_stream(n: int, rng: np.random.Generator, base_latency: float = 400.0, tokens_mu: float = 5.5,
                  tokens_per_s: float = 60.0) -> np.ndarray:
    """``(n, F)`` raw metrics of a healthy worker."""
    t = np.arange(n)
    load = 1.0 + 0.25 * np.sin(2 * np.pi * t / 200.0 + rng.uniform(0, 2 * np.pi))
    latency = base_latency * load * rng.lognormal(0.0, 0.25, n)
    tokens = np.round(rng.lognormal(tokens_mu, 0.4, n))
    duration = latency / 1000.0 + tokens / tokens_per_s * rng.lognormal(0.0, 0.1, n)
    error_rate = np.clip(rng.beta(1.0, 40.0, n), 0, 1)
    success = (rng.random(n) > 0.02 + 2 * error_rate).astype(np.float64)
    return np.stack([latency, error_rate, tokens, duration, success], axis=1)


def inject(values: np.ndarray, kind: str, start: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Apply one event of ``kind`` at row ``start`` in place; returns ``(values, end row)``."""
    lat, err, tok, dur, ok = (FIELDS.index(f) for f in ("latency_ms", "error_rate", "tokens", "duration_s", "success"))
    n = values.shape[0]
    if kind == "spike":
        end = min(start + rng.integers(2, 7) - 1, n - 1)
        f = rng.uniform(4, 8)
        values[start : end + 1, lat] *= f
        values[start : end + 1, dur] += values[start : end + 1, lat] * (1 - 1 / f) / 1000.0
    elif kind == "drift":
        ramp = int(rng.integers(40, 81))
        end = min(start + ramp + 40, n - 1)  # ramps up, then stays high for 40 rows
        k = np.arange(end - start + 1)
        f = 1 + 2.0 * np.minimum(k / ramp, 1.0)
        values[start : end + 1, lat] *= f
        values[start : end + 1, dur] *= f
    elif kind == "error_burst":
        end = min(start + rng.integers(3, 11) - 1, n - 1)
        m = end - start + 1
        values[start : end + 1, err] = rng.uniform(0.4, 0.8, m)
        values[start : end + 1, ok] = (rng.random(m) < 0.2).astype(np.float64)
    elif kind == "token_blowup":
        end = min(start + rng.integers(2, 7) - 1, n - 1)
        f = rng.uniform(6, 12)
        values[start : end + 1, tok] *= f
        values[start : end + 1, dur] *= 1 + 0.8 * (f - 1)
    elif kind == "dropout":
        end = min(start + rng.integers(3, 11) - 1, n - 1)
        m = end - start + 1
        values[start : end + 1, tok] = rng.integers(0, 3, m)
        values[start : end + 1, dur] = rng.uniform(0.01, 0.05, m)
        values[start : end + 1, ok] = 0.0
    else:
        raise ConfigError.bad_choice("event kind", kind, EVENT_KINDS)
    return values, int(end)


@dataclass
class Streams:
    """Normal ``history`` of each worker, then a later ``live`` stretch of the same workers with events.

    ``labels`` ``(len(live),)`` is True on injected rows; events' ``start``/``end`` index each
    worker's own live stream (row ``j`` of a worker is its ``j``-th row in ``live``).
    """

    history: list[MetricRow]
    live: list[MetricRow]
    events: list[Event]
    labels: np.ndarray


def _interleave(streams: list[tuple[str, np.ndarray, np.ndarray]], offset: int) -> tuple[list[MetricRow], list[bool]]:
    rows, labels = [], []
    for i in range(streams[0][1].shape[0]):  # round-robin, as rows arrive from a pool of workers
        for name, v, lab in streams:
            rows.append(MetricRow(name, offset + i, tuple(float(x) for x in v[i])))
            labels.append(bool(lab[i]))
    return rows, labels


def make_streams(n_workers: int, n_history: int, n_live: int, events_per_worker: int = 0,
                 kinds: tuple[str, ...] = EVENT_KINDS, seed: int = 0, margin: int = 60) -> Streams:
    """Workers with their own normal levels; ``events_per_worker`` events spread over each live stream.

    Each event gets its own slot of the live stream, so events never overlap (give about 200 live
    rows per event: a drift lasts up to 120 rows).
    """
    rng = np.random.default_rng(seed)
    hist, live, events = [], [], []
    for w in range(n_workers):
        name = f"worker-{w}"
        profile = dict(base_latency=rng.uniform(200, 800), tokens_mu=rng.uniform(4.5, 6.5),
                       tokens_per_s=rng.uniform(30, 120))
        v = normal_stream(n_history + n_live, rng, **profile)
        lab = np.zeros(n_live, dtype=bool)
        lv = v[n_history:]
        span = (n_live - 2 * margin) // max(events_per_worker, 1)
        for i in range(events_per_worker):
            s = margin + i * span + int(rng.integers(0, max(span - 140, 1)))
            kind = str(kinds[int(rng.integers(0, len(kinds)))])
            lv, end = inject(lv, kind, s, rng)
            lab[s : end + 1] = True
            events.append(Event(kind, name, s, end))
        hist.append((name, v[:n_history], np.zeros(n_history, dtype=bool)))
        live.append((name, lv, lab))
    history_rows, _ = _interleave(hist, 0)
    live_rows, labels = _interleave(live, n_history)
    return Streams(history_rows, live_rows, events, np.array(labels, dtype=bool))


@dataclass
class DemoFiles:
    """What :func:`write_demo` wrote: normal ``history`` to train on, ``live`` rows with incidents to
    score or watch, and ``events`` (the injected incidents, one JSON line each, the answer key)."""

    history: Path
    live: Path
    events: Path
    n_history: int
    n_live: int
    n_events: int


def _write_jsonl(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(path, lambda fh: fh.write(text.encode()))


def write_demo(folder: str | os.PathLike, n_workers: int = 3, n_history: int = 600, n_live: int = 400,
               events_per_worker: int = 2, seed: int = 0) -> DemoFiles:
    """Generate worker metrics to try the detectors on: ``history.jsonl`` (normal rows of
    ``n_workers`` workers), ``live.jsonl`` (a later stretch with ``events_per_worker`` injected
    incidents per worker) and ``events.jsonl`` (which incidents, where). Seeded: the same seed
    writes the same files."""
    streams = make_streams(n_workers, n_history, n_live, events_per_worker=events_per_worker, seed=seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = DemoFiles(folder / "history.jsonl", folder / "live.jsonl", folder / "events.jsonl",
                      len(streams.history), len(streams.live), len(streams.events))
    _write_jsonl(files.history, [r.as_dict() for r in streams.history])
    _write_jsonl(files.live, [r.as_dict() for r in streams.live])
    _write_jsonl(files.events, [dataclasses.asdict(e) for e in streams.events])
    return files
