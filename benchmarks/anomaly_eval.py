"""Anomaly detection on worker metrics: the autoencoder vs a rolling z-score, on streams with injected events.

Each seed makes 6 workers with their own normal levels: 1500 rows of normal history to train
on, then 2500 live rows with 8 injected events per worker (spikes, drifts, error bursts, token
blow-ups, dropouts; see ``cortex.anomaly.synthetic``). Both detectors set their threshold the same
way (the 0.995 quantile of scores on normal history) and are judged the same way:

- alerts: per-row flags become episodes (:class:`cortex.anomaly.stream.EpisodeTracker`); an
  ``anomaly`` alert starts an episode after ``confirm_after`` flagged rows in a row (1 or 2);
- event recall: an event is detected when an alert is raised at a row in ``[start, end + grace]``
  (``grace`` = window - 1 rows: a window that still contains the event may flag it);
- alert precision: share of alerts raised inside some event's ``[start, end + grace]``; F1 of the two;
- detection delay: rows from an event's start to its alert;
- false alerts per 1000 normal rows.

One JSON line per (detector, confirm_after), pooled over seeds, with ratios against the z-score
baseline at the same ``confirm_after``.

    python benchmarks/anomaly_eval.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402


def evaluate(det, streams, grace: int, confirm_after: int) -> dict:
    """Score the live rows, turn them into episode alerts, and match alerts to events."""
    from cortex.anomaly.detector import score_rows
    from cortex.anomaly.metrics import by_worker
    from cortex.anomaly.stream import episode_alerts

    live = streams.live
    t = time.perf_counter()
    scores = score_rows(det, live)
    score_s = time.perf_counter() - t
    alerts = [a for a in episode_alerts(scores, live, det.kind, confirm_after=confirm_after) if a.kind == "anomaly"]
    alert_rows = {a.row for a in alerts}
    rows_of = by_worker(live)
    reach: set[int] = set()  # live rows in some event's [start, end + grace]
    out = {"events": 0, "detected": 0, "delays": [], "by_kind": defaultdict(lambda: [0, 0])}
    for e in streams.events:
        idx = rows_of[e.worker]
        window = idx[e.start : min(e.end + grace + 1, len(idx))]
        reach.update(window)
        first = next((j for j, r in enumerate(window) if r in alert_rows), None)
        out["events"] += 1
        out["by_kind"][e.kind][1] += 1
        if first is not None:
            out["detected"] += 1
            out["by_kind"][e.kind][0] += 1
            out["delays"].append(first)
    out["alerts"] = len(alerts)
    out["true_alerts"] = len(alert_rows & reach)
    out["normal_rows"] = len(live) - len(reach)
    out["score_s"] = score_s
    out["rows"] = len(live)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--history", type=int, default=1500)
    ap.add_argument("--live", type=int, default=2500)
    ap.add_argument("--events", type=int, default=8, help="events per worker")
    args = ap.parse_args()

    import torch

    from cortex.anomaly.autoencoder import AutoencoderConfig, AutoencoderDetector
    from cortex.anomaly.baseline import RollingZScore, ZScoreConfig
    from cortex.anomaly.synthetic import make_streams

    torch.set_num_threads(1)
    cfg = AutoencoderConfig()
    grace = cfg.window - 1
    pooled: dict[str, list[dict]] = defaultdict(list)
    train_s: dict[str, float] = defaultdict(float)
    for seed in args.seeds:
        st = make_streams(args.workers, args.history, args.live, args.events, seed=seed)
        t = time.perf_counter()
        z = RollingZScore.fit(st.history, ZScoreConfig(threshold_quantile=cfg.threshold_quantile))
        train_s["rolling_zscore"] += time.perf_counter() - t
        t = time.perf_counter()
        ae = AutoencoderDetector.fit(st.history, AutoencoderConfig(seed=seed))
        train_s["autoencoder"] += time.perf_counter() - t
        for det in (z, ae):
            for confirm in (1, 2):
                pooled[(det.kind, confirm)].append(evaluate(det, st, grace, confirm))

    summary = {}
    for (kind, confirm), runs in pooled.items():
        events = sum(r["events"] for r in runs)
        recall = sum(r["detected"] for r in runs) / events
        alerts = sum(r["alerts"] for r in runs)
        precision = sum(r["true_alerts"] for r in runs) / alerts if alerts else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        delays = [d for r in runs for d in r["delays"]]
        by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in runs:
            for k, (d, n) in r["by_kind"].items():
                by_kind[k][0] += d
                by_kind[k][1] += n
        summary[(kind, confirm)] = {
            "precision": precision, "recall": recall, "f1": f1,
            "delay_mean_rows": float(np.mean(delays)) if delays else None,
            "delay_median_rows": float(np.median(delays)) if delays else None,
            "false_alerts_per_1k_normal_rows": 1000 * (alerts - sum(r["true_alerts"] for r in runs))
            / sum(r["normal_rows"] for r in runs),
            "recall_by_kind": {k: round(d / n, 3) for k, (d, n) in sorted(by_kind.items())},
            "events": events, "alerts": alerts,
            "train_s": train_s[kind], "score_ms_per_1k_rows": 1e6 * sum(r["score_s"] for r in runs) / sum(r["rows"] for r in runs),
        }
    info = machine()
    for (kind, confirm), s in summary.items():
        base = summary[("rolling_zscore", confirm)]
        print(json.dumps({
            "bench": "anomaly_eval", "detector": kind, "confirm_after": confirm, "seeds": args.seeds,
            "workers": args.workers,
            "history_rows": args.history, "live_rows": args.live, "grace_rows": grace,
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()},
            "vs_zscore": {m: (round(s[m] / base[m], 3) if base[m] else None) for m in ("precision", "recall", "f1")},
            **info,
        }))


if __name__ == "__main__":
    main()
