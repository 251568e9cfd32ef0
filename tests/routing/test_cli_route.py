"""`cortex route ...` end to end on synthetic logs with the tiny encoder: train, decide, eval,
feedback, retrain, rollback, ingest, status, and one-line errors."""

from __future__ import annotations

import json

import pytest

from cortex.cli.main import main

from .conftest import MASTERS, synthetic_logs, write_jsonl


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def files(tmp_path):
    logs = synthetic_logs(260)
    write_jsonl(tmp_path / "train.jsonl", logs[:200])
    write_jsonl(tmp_path / "test.jsonl", logs[200:])
    labeled = [{"prompt": r["task_title"], "group": r["routed_to"], "ok": r["success"], "uid": r["task_id"]}
               for r in logs[200:]]
    write_jsonl(tmp_path / "labeled.jsonl", labeled)
    write_jsonl(tmp_path / "new.jsonl", synthetic_logs(120, seed=4, start=1.9e9))
    return tmp_path


def test_route_cli_end_to_end(capsys, files, tiny_encoder, masters_yaml, rules_yaml):
    code, out, err = run(capsys, "route", "train", "--data", str(files / "train.jsonl"), "--masters", str(masters_yaml),
                         "--rules", str(rules_yaml), "--text-encoder", str(tiny_encoder), "--name", "r1",
                         "--epochs", "40")
    assert code == 0, err
    trained = last_json(out)
    assert trained["router"] == "r1" and trained["champion"] and trained["records"] == 200
    assert json.loads(run(capsys, "route", "status")[1]) == {"champion": "r1", "challenger": None, "archive": None}

    code, out, _ = run(capsys, "route", "deploy the docker pipeline runner")
    d = json.loads(out)
    assert code == 0 and d["master"] in MASTERS and d["router"] == "r1"
    d = json.loads(run(capsys, "route", "--threshold", "1.0", "patch the exploit")[1])
    assert (d["path"], d["master"]) == ("rules", "security")

    code, out, _ = run(capsys, "route", "eval", "--data", str(files / "test.jsonl"), "--latency-samples", "5")
    rep = last_json(out)
    assert code == 0 and rep["n"] == 60
    assert set(rep) >= {"n", "accuracy", "macro_f1", "ece", "success_auroc", "fallback_rate", "p50_ms", "p99_ms"}
    code, out, _ = run(capsys, "route", "eval", "--router", "r1", "--data", str(files / "labeled.jsonl"),
                       "--text-field", "prompt", "--label-field", "group", "--success-field", "ok",
                       "--latency-samples", "3")
    assert code == 0 and last_json(out)["n"] == 60 and last_json(out)["success_auroc"] is not None

    code, out, _ = run(capsys, "route", "feedback", "fb-1", "--success", "--minutes", "12", "--tokens", "900",
                       "--text", "release the docker build", "--routed-to", "cicd")
    assert code == 0 and json.loads(out)["status"] == "recorded"

    code, out, err = run(capsys, "route", "retrain", "--data", str(files / "new.jsonl"), "--margin", "-1",
                         "--ece-tolerance", "1", "--auroc-tolerance", "1", "--mae-tolerance", "100",
                         "--epochs", "10", "--min-window", "20")
    rep = last_json(out)
    assert code == 0 and rep["promoted"] and rep["champion"] == "r1"
    status = json.loads(run(capsys, "route", "status")[1])
    assert status["champion"] == rep["challenger"] and status["archive"] == "r1"
    code, out, _ = run(capsys, "route", "rollback")
    assert code == 0 and last_json(out)["champion"] == "r1"

    code, out, _ = run(capsys, "route", "ingest", str(files / "new.jsonl"), "--out", str(files / "t.parquet"))
    assert code == 0 and last_json(out)["records"] == 120 and (files / "t.parquet").is_file()


def test_cli_errors_are_one_line(capsys, files, tiny_encoder):
    code, _, err = run(capsys, "route", "train", "--data", str(files / "labeled.jsonl"), "--text-field", "promt",
                       "--label-field", "group", "--text-encoder", str(tiny_encoder))
    assert code == 1 and "Did you mean 'prompt'" in err
    code, _, err = run(capsys, "route", "some task")
    assert code == 1 and "router:champion" in err
    code, _, err = run(capsys, "route", "rollback")
    assert code == 1 and "no archived champion" in err
    bad = files / "bad.jsonl"
    bad.write_text('{"prompt": "x", "group": "dev"}\nnot json\n')
    code, _, err = run(capsys, "route", "ingest", str(bad), "--out", str(files / "b.parquet"), "--text-field", "prompt",
                       "--label-field", "group")
    assert code == 1 and "bad.jsonl:2" in err and "--skip-bad" in err
