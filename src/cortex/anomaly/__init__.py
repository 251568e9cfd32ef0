"""Anomaly detection on worker metrics: an autoencoder over metric windows, a rolling z-score
baseline, scoring, live monitoring of a metrics file, and JSONL alerts."""

from cortex.anomaly.alerts import Alert, JsonlAlertSink
from cortex.anomaly.autoencoder import AutoencoderConfig, AutoencoderDetector, TrainReport
from cortex.anomaly.baseline import RollingZScore, ZScoreConfig
from cortex.anomaly.detector import RowScore, default_detector_dir, load_detector, save_detector, score_rows
from cortex.anomaly.metrics import FIELDS, MetricFile, MetricRow, parse_row, read_metrics
from cortex.anomaly.stream import EpisodeTracker, StreamMonitor, episode_alerts, watch_file

__all__ = [
    "FIELDS", "Alert", "AutoencoderConfig", "AutoencoderDetector", "JsonlAlertSink", "MetricFile", "MetricRow",
    "EpisodeTracker", "RollingZScore", "RowScore", "StreamMonitor", "episode_alerts", "TrainReport", "ZScoreConfig", "default_detector_dir",
    "load_detector", "parse_row", "read_metrics", "save_detector", "score_rows", "watch_file",
]
