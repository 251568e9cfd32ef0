"""Ingestion: every bad line reported by number, dedup by task id, as-of joins, parquet."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import numpy as np
import pytest

from cortex.errors import DataError
from cortex.routing.data import (
    COLUMNS, attach_worker_metrics, ctx_column, ingest_labeled, ingest_logs, read_training_set,
    read_worker_metrics, write_parquet,
)

GOOD = {"task_id": "a", "task_title": "Fix build", "task_type": "bug", "description": "CI is red",
        "routed_to": "cicd", "timestamp": "2026-11-20T10:00:00Z", "success": True,
        "completion_time_minutes": 12.5, "tokens_used": 800}


def write(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_bad_lines_are_reported_with_numbers(tmp_path):
    p = write(tmp_path / "logs.jsonl", [
        GOOD,
        "{not json",
        {**GOOD, "task_id": "b", "routed_to": "qa"},
        {**GOOD, "task_id": "c", "success": "yes"},
        "",
        {**GOOD, "task_id": "d", "task_title": "", "description": None},
        {**GOOD, "task_id": "e", "completion_time_minutes": -3},
        [1, 2],
    ])
    rep = ingest_logs(p, masters=["cicd", "dev"])
    assert len(rep.frame) == 1 and rep.n_lines == 7
    by_line = {pr.line: pr.message for pr in rep.problems}
    assert sorted(by_line) == [2, 3, 4, 6, 7, 8]
    assert "not valid JSON" in by_line[2] and "'qa' is not one of the masters" in by_line[3]
    assert "'success'" in by_line[4] and "'task_title' or 'description'" in by_line[6]
    assert "must be > 0" in by_line[7] and "JSON object" in by_line[8]
    with pytest.raises(DataError, match=r"(?s)logs.jsonl:3: .*--skip-bad"):
        rep.raise_if_bad()
    rep.raise_if_bad(allow_bad=True)  # explicit opt-in keeps the good record


def test_rows_text_label_and_outcomes(tmp_path):
    p = write(tmp_path / "l.jsonl", [{**GOOD, "user_corrected_to": "dev", "success": False}])
    row = ingest_logs(p).frame.iloc[0]
    assert list(ingest_logs(p).frame.columns) == list(COLUMNS)
    assert row.text == "bug: Fix build\nCI is red"
    assert row.label == "dev" and row.outcome_master == "cicd" and row.success == 0.0
    assert row.minutes == 12.5 and row.tokens == 800 and row.timestamp == datetime(2026, 11, 20, 10, tzinfo=timezone.utc).timestamp()


def test_dedup_keeps_the_newest_record(tmp_path):
    p = write(tmp_path / "l.jsonl", [
        {**GOOD, "task_id": "x", "timestamp": "2026-11-20T12:00:00Z", "task_title": "newest"},
        {**GOOD, "task_id": "x", "timestamp": "2026-11-20T11:00:00Z", "task_title": "older"},
        {**GOOD, "task_id": "y", "timestamp": None, "task_title": "first"},
        {**GOOD, "task_id": "y", "timestamp": None, "task_title": "second"},
    ])
    rep = ingest_logs(p)
    assert rep.n_duplicates == 2
    assert dict(zip(rep.frame.task_id, rep.frame.text)) == {"x": "bug: newest\nCI is red", "y": "bug: second\nCI is red"}


def test_worker_metrics_join_as_of_never_from_the_future(tmp_path):
    logs = write(tmp_path / "l.jsonl", [
        {**GOOD, "task_id": "early", "timestamp": "2026-11-20T08:00:00Z"},
        {**GOOD, "task_id": "mid", "timestamp": "2026-11-20T10:30:00Z"},
        {**GOOD, "task_id": "none", "timestamp": None},
    ])
    metrics = write(tmp_path / "m.jsonl", [
        {"timestamp": "2026-11-20T09:00:00Z", "worker": "cicd", "success_rate": 0.5, "queue_length": 4},
        {"timestamp": "2026-11-20T10:00:00Z", "worker": "cicd", "success_rate": 0.75, "latency_ms": 300},
        {"timestamp": "2026-11-20T11:00:00Z", "worker": "cicd", "success_rate": 0.25},
        {"timestamp": "2026-11-20T09:00:00Z", "worker": "cicd", "success_rate": 7},
    ])
    rep = ingest_logs(logs, masters=["cicd", "dev"], metrics_path=metrics)
    assert [p.line for p in rep.problems] == [4] and "<= 1" in rep.problems[0].message
    col = rep.frame.set_index("task_id")[ctx_column("cicd", "success_rate")]
    assert math.isnan(col["early"]) and col["mid"] == 0.75 and math.isnan(col["none"])
    lat = rep.frame.set_index("task_id")[ctx_column("cicd", "latency_ms")]
    assert lat["mid"] == 300


def test_labeled_files_and_field_name_errors(tmp_path, shared_data):
    rep = ingest_labeled(shared_data / "routing" / "train.jsonl", text_field="prompt", label_field="master",
                         success_field="weak_correct")
    assert len(rep.frame) + rep.n_duplicates == rep.n_lines == 9219 and not rep.problems
    assert rep.n_duplicates == 38  # the file repeats 38 ids (identical prompts)
    assert set(rep.frame.label) == {"math", "science", "computing", "medicine", "law_policy", "humanities",
                                    "business_social"}
    assert rep.frame.success.isin([0.0, 1.0]).all()
    p = write(tmp_path / "x.jsonl", [{"prompt": "hi", "master": "math"}])
    with pytest.raises(DataError, match="--label-field 'mastr'.*Did you mean 'master'"):
        ingest_labeled(p, text_field="prompt", label_field="mastr")


def test_parquet_round_trip_keeps_context_columns(tmp_path):
    logs = write(tmp_path / "l.jsonl", [GOOD])
    metrics = write(tmp_path / "m.jsonl", [{"timestamp": 0, "worker": "cicd", "queue_length": 2}])
    frame = ingest_logs(logs, metrics_path=metrics).frame
    back = read_training_set(write_parquet(frame, tmp_path / "t.parquet"))
    assert list(back.columns) == list(frame.columns)
    np.testing.assert_array_equal(back[ctx_column("cicd", "queue_length")], [2.0])
    metric_frame, _ = read_worker_metrics(metrics)
    assert attach_worker_metrics(frame, metric_frame).shape == frame.shape
    with pytest.raises(DataError, match="cortex route ingest"):
        read_training_set(tmp_path / "missing.parquet")
