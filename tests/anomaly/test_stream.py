from __future__ import annotations

import json
import threading
import time

import pytest

from cortex.anomaly.alerts import JsonlAlertSink
from cortex.anomaly.baseline import RollingZScore, ZScoreConfig
from cortex.anomaly.detector import score_rows
from cortex.anomaly.metrics import MetricRow
from cortex.anomaly.stream import StreamMonitor, episode_alerts, watch_file
from cortex.errors import AnomalyError, ConfigError

from .conftest import write_jsonl


def calm(i, worker="w", lat=100.0):
    return MetricRow(worker, i, (lat + (i % 3), 0.01, 50.0, 1.0, 1.0))


def zdet():
    return RollingZScore(ZScoreConfig(history=5, min_history=3), threshold=5.0)


def test_monitor_matches_batch_scores_and_alerts_per_episode(tmp_path):
    rows = [calm(i) for i in range(12)] + [MetricRow("w", 12, (5000.0, 0.01, 50.0, 1.0, 1.0)),
                                           MetricRow("w", 13, (5000.0, 0.01, 50.0, 1.0, 1.0))]
    rows += [calm(i) for i in range(14, 30)] + [calm(i, worker="v") for i in range(5)]
    det = zdet()
    sink = JsonlAlertSink(tmp_path / "alerts.jsonl")
    mon = StreamMonitor(det, sink, recover_after=3)
    live = [mon.push(r) for r in rows]
    batch = {s.row: s for s in score_rows(det, rows)}
    assert {i: s.score for i, s in enumerate(live) if s is not None} == pytest.approx({i: s.score for i, s in batch.items()})
    kinds = [(a.kind, a.worker, a.row) for a in mon.alerts]
    # recovery: the third calm row of "w" in a row after the spike
    calm_rows = [i for i in range(13, 30) if not batch[i].anomalous]
    recovered = next(r for j, r in enumerate(calm_rows[2:], start=2) if calm_rows[j - 2] == r - 2)
    assert kinds == [("anomaly", "w", 12), ("recovered", "w", recovered)]
    assert [a.kind for a in mon.alerts].count("anomaly") == 1  # one alert for the episode, not one per row
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in lines] == [a.kind for a in mon.alerts]
    assert lines[0]["top_feature"] == "latency_ms" and lines[0]["values"]["latency_ms"] == 5000.0
    assert [(a.kind, a.row) for a in episode_alerts(list(batch.values()), rows, det.kind)] == [(k, r) for k, _, r in kinds]


def test_watch_file_no_follow_handles_bad_lines_and_missing_newline(tmp_path):
    p = tmp_path / "m.jsonl"
    write_jsonl(p, [calm(i) for i in range(8)])
    with open(p, "a") as f:
        f.write("{oops\n")
        f.write('{"worker": "w", "latency_ms": 100}\n')
        f.write(json.dumps(calm(8).as_dict()))  # last line without newline
    mon = StreamMonitor(zdet())
    n = watch_file(p, mon, follow=False)
    assert n == 11 and mon.rows_seen == 9 and mon.bad_rows == 2
    bad = [a for a in mon.alerts if a.kind == "bad_row"]
    assert "not valid JSON" in bad[0].detail and "missing field(s) error_rate" in bad[1].detail
    with pytest.raises(AnomalyError, match="does not exist"):
        watch_file(tmp_path / "nope.jsonl", mon, follow=False)


def test_watch_follows_a_growing_file(tmp_path):
    p = tmp_path / "live.jsonl"
    write_jsonl(p, [calm(i) for i in range(6)])
    mon = StreamMonitor(zdet(), JsonlAlertSink(tmp_path / "a.jsonl"))
    done = threading.Event()

    def writer():
        with open(p, "a") as f:
            for i in range(6, 10):
                f.write(json.dumps(calm(i).as_dict()) + "\n")
                f.flush()
                time.sleep(0.05)
            half = json.dumps({**calm(10).as_dict(), "latency_ms": 9000.0})
            f.write(half[:10])  # a line arrives in two writes
            f.flush()
            time.sleep(0.1)
            f.write(half[10:] + "\n")
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    n = watch_file(p, mon, follow=True, poll_s=0.02, max_seconds=10,
                   should_stop=lambda: done.is_set() and mon.rows_seen == 11)
    t.join()
    assert n == 11 and mon.rows_seen == 11
    assert [(a.kind, a.row) for a in mon.alerts] == [("anomaly", 10)]
    assert json.loads((tmp_path / "a.jsonl").read_text())["row"] == 10


def test_confirm_after_waits_for_consecutive_flags():
    from cortex.anomaly.detector import RowScore
    from cortex.anomaly.stream import EpisodeTracker

    def score(i, hot):
        return RowScore(i, "w", i, 9.0 if hot else 0.0, 5.0, hot, "latency_ms")

    pattern = [1, 0, 1, 1, 1, 0, 0, 0, 1]
    one, two = EpisodeTracker("x", recover_after=3), EpisodeTracker("x", recover_after=3, confirm_after=2)
    got1 = [(a.kind, a.row) for i, h in enumerate(pattern) if (a := one.update(score(i, h), (0,) * 5))]
    got2 = [(a.kind, a.row) for i, h in enumerate(pattern) if (a := two.update(score(i, h), (0,) * 5))]
    assert got1 == [("anomaly", 0), ("recovered", 7), ("anomaly", 8)]
    assert got2 == [("anomaly", 3), ("recovered", 7)]
    with pytest.raises(ConfigError):
        EpisodeTracker("x", confirm_after=0)
