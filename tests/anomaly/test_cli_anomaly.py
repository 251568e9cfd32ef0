"""`cortex anomaly train | score | watch` through the real entry point."""

from __future__ import annotations

import json

from cortex.cli.main import main

from .conftest import write_jsonl


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_score_watch(streams, tmp_path, capsys):
    hist = write_jsonl(tmp_path / "hist.jsonl", streams.history)
    live = write_jsonl(tmp_path / "live.jsonl", streams.live)
    code, out, _ = run(capsys, "anomaly", "train", str(hist), "--name", "w1", "--window", "5", "--epochs", "8")
    assert code == 0 and "trained autoencoder on 1260 rows" in out

    alerts = tmp_path / "alerts.jsonl"
    code, out, _ = run(capsys, "anomaly", "score", str(live), "--name", "w1", "--alerts", str(alerts))
    assert code == 0 and "scored 1248 of 1260 rows" in out
    written = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert written and {a["kind"] for a in written} <= {"anomaly", "recovered"}
    episodes = sum(a["kind"] == "anomaly" for a in written)
    assert f"in {episodes} episode(s)" in out

    code, out, _ = run(capsys, "anomaly", "watch", str(live), "--name", "w1", "--no-follow", "--alerts",
                       str(tmp_path / "watch.jsonl"))
    assert code == 0 and "1260 rows, 0 bad" in out
    watched = [json.loads(x) for x in (tmp_path / "watch.jsonl").read_text().splitlines()]
    assert [(a["kind"], a["row"]) for a in watched] == [(a["kind"], a["row"]) for a in written]

    code, out, _ = run(capsys, "anomaly", "train", str(hist), "--name", "z1", "--method", "zscore")
    assert code == 0 and "rolling_zscore" in out


def test_bad_inputs(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"latency_ms": 10, "tokens": 3}\n')
    code, _, err = run(capsys, "anomaly", "train", str(bad), "--name", "b")
    assert code == 1 and "missing field(s) error_rate, duration_s, success" in err and "--skip-bad" in err
    code, _, err = run(capsys, "anomaly", "score", str(bad), "--name", "never-trained")
    assert code == 1 and "cortex anomaly train" in err
    code, _, err = run(capsys, "anomaly", "train", str(bad), "--method", "forest")
    assert code == 1 and "--method='forest' is not one of" in err


def test_demo_writes_seeded_files_the_detectors_read(tmp_path, capsys):
    from cortex.anomaly.metrics import read_metrics

    code, out, _ = run(capsys, "anomaly", "demo", str(tmp_path / "a"), "--workers", "2", "--seed", "3")
    assert code == 0 and "cortex anomaly train" in out
    assert main(["anomaly", "demo", str(tmp_path / "b"), "--workers", "2", "--seed", "3"]) == 0
    for name in ("history.jsonl", "live.jsonl", "events.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(read_metrics(tmp_path / "a" / "history.jsonl").rows) == 2 * 600
    live = read_metrics(tmp_path / "a" / "live.jsonl").rows
    events = [json.loads(x) for x in (tmp_path / "a" / "events.jsonl").read_text().splitlines()]
    assert len(live) == 2 * 400 and len(events) == 4 and {e["worker"] for e in events} == {"worker-0", "worker-1"}
