from __future__ import annotations

import numpy as np
import pytest

from cortex.anomaly.autoencoder import AutoencoderConfig, AutoencoderDetector
from cortex.anomaly.baseline import RollingZScore, ZScoreConfig
from cortex.anomaly.detector import load_detector, save_detector, score_rows
from cortex.anomaly.features import sliding_windows, transform
from cortex.anomaly.metrics import MetricRow, by_worker, values_array
from cortex.errors import AnomalyError, ConfigError


def event_rows(streams, event):
    idx = by_worker(streams.live)[event.worker]
    return set(idx[event.start : event.end + 1])


def test_autoencoder_threshold_is_the_validation_quantile(streams, trained):
    cfg = trained.config
    val = []
    for w, idx in by_worker(streams.history).items():
        z = trained.scaler_for(w)(values_array([streams.history[i] for i in idx]))
        win = sliding_windows(z, cfg.window)
        val.append(win[int(round(len(win) * (1 - cfg.val_fraction))) :])
    errors, _ = trained.window_errors(np.concatenate(val))
    assert trained.threshold == pytest.approx(np.quantile(errors, cfg.threshold_quantile))
    assert trained.report.val_windows == sum(map(len, val))


def test_autoencoder_flags_injected_events(streams, trained):
    scores = score_rows(trained, streams.live)
    flagged = {s.row for s in scores if s.anomalous}
    window = trained.config.window
    for e in streams.events:
        idx = by_worker(streams.live)[e.worker]
        reach = set(idx[e.start : min(e.end + window, len(idx))])  # windows that contain the event
        assert flagged & reach, f"missed {e}"
    normal = [s for s in scores if not streams.labels[s.row]]
    assert sum(s.anomalous for s in normal) / len(normal) < 0.1
    assert len(scores) == len(streams.live) - 3 * (window - 1)  # each worker's first window-1 rows lack history


def test_a_large_latency_spike_is_flagged_at_once(streams, trained):
    idx = by_worker(streams.history)["worker-0"][-40:]
    rows = [streams.history[i] for i in idx]
    lat, *rest = rows[30].values
    rows[30] = MetricRow("worker-0", rows[30].time, (lat * 20, *rest))
    scores = {s.row: s for s in score_rows(trained, rows)}
    assert scores[30].anomalous and scores[30].top_feature == "latency_ms"
    assert scores[30].score > max(scores[r].score for r in range(trained.config.window - 1, 30))


def test_save_and_load_give_the_same_scores(streams, trained, tmp_path):
    folder = save_detector(trained, tmp_path / "det")
    save_detector(trained, folder)  # replacing an existing detector is atomic too
    again = load_detector(folder)
    a, b = score_rows(trained, streams.live[:60]), score_rows(again, streams.live[:60])
    assert [s.score for s in a] == pytest.approx([s.score for s in b], rel=1e-6)
    assert again.worker_scalers.keys() == trained.worker_scalers.keys()
    with pytest.raises(AnomalyError, match="cortex anomaly train"):
        load_detector(tmp_path / "nothing")


def test_unseen_worker_uses_the_pooled_scaling(trained):
    assert trained.scaler_for("never-seen") is trained.scaler


def test_zscore_closed_form():
    det = RollingZScore(ZScoreConfig(history=4, min_history=3), threshold=3.0)
    lat = [100, 110, 90, 100, 105, 1000]
    raw = np.array([[v, 0.01, 50, 1.0, 1.0] for v in lat])
    scores, top = det.score_array(raw)
    t = transform(raw)
    assert np.isnan(scores[:3]).all()
    for i in range(3, 6):
        past = t[max(0, i - 4) : i]
        z = np.abs(t[i] - past.mean(0)) / np.maximum(past.std(0), [0.05, 0.01, 0.05, 0.05, 0.1])
        assert scores[i] == pytest.approx(z.max())
    assert top[5] == 0 and scores[5] > 3.0


def test_zscore_fit_and_roundtrip(streams, tmp_path):
    det = RollingZScore.fit(streams.history, ZScoreConfig(threshold_quantile=0.99))
    again = load_detector(save_detector(det, tmp_path / "z"))
    assert again.threshold == det.threshold and again.config == det.config


def test_too_little_history_and_bad_configs():
    rows = [MetricRow("w", i, (100.0, 0.0, 10.0, 1.0, 1.0)) for i in range(30)]
    with pytest.raises(AnomalyError, match="more normal history"):
        AutoencoderDetector.fit(rows, AutoencoderConfig(epochs=1))
    with pytest.raises(ConfigError, match="val_fraction"):
        AutoencoderConfig(val_fraction=0.9)
    with pytest.raises(ConfigError, match="min_history"):
        ZScoreConfig(history=3, min_history=5)
