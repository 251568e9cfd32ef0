"""benchmarks/gpu_suite.py: the CPU smoke run prints every part's line; caps, skips and bad uses are handled.

The figures of a smoke run mean nothing (tiny sizes, a shared CPU); these tests check that every part
runs and reports, so the suite is ready the moment a GPU is lent.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
ROUTING_DATA = ROOT.parent / "shared" / "data" / "routing" / "train.jsonl"
FIGURES = {"dataloader_tokenization", "compile", "train_throughput", "train_throughput_ratio", "lens_bank",
           "lambo2_surrogate_pass", "lambo2_round", "router"}


@pytest.fixture(scope="module")
def suite():
    """The script as a module (benchmarks/ is not a package); sys.path is restored afterwards."""
    before = list(sys.path)
    spec = importlib.util.spec_from_file_location("gpu_suite_under_test", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)
    sys.path[:] = before


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SUITE), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, check=False)


@pytest.mark.slow
def test_cpu_smoke_run_prints_every_part(suite, tmp_path):
    proc = _run("--device", "cpu", "--smoke", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # stdout holds the JSON lines only
    assert lines[0]["figure"] == "header" and lines[0]["smoke"] is True and lines[0]["commit"]
    assert lines[-1]["figure"] == "summary"
    for line in lines:
        assert {"part", "figure", "status", "device_name", "torch", "cuda", "machine"} <= line.keys()
        assert line["device"] == "cpu"
    ok = {line["figure"] for line in lines if line["status"] == "ok"}
    assert FIGURES <= ok, f"missing: {FIGURES - ok}"
    # the router reads the shared prompts when they are there, else the sample shipped in the package
    router = [line for line in lines if line["figure"] == "router"]
    assert router[0]["data"].endswith("train.jsonl" if ROUTING_DATA.is_file() else "routing_sample.jsonl")
    assert {(line["encoder"], line["texts"]) for line in router} == {
        (e, t) for e in ("cpu_fp32_traced", "cpu_fp32", "cpu_bf16") for t in ("prompt", "short")}
    parts = lines[-1]["parts"]
    assert list(parts) == [p.name for p in suite.PARTS]
    for name, outcome in parts.items():
        assert outcome["status"] == "ok" and outcome["lines"] >= 1, (name, outcome)
    # the same lines went to the --out folder as they were made
    written = list(tmp_path.glob("gpu_suite-*-cpu-smoke.jsonl"))
    assert len(written) == 1
    assert [json.loads(x) for x in written[0].read_text().splitlines()] == lines
    # a smoke run is never kept as a result
    assert _run("--record", str(written[0]), timeout=120).returncode == 2


def test_cuda_without_a_gpu_fails_before_measuring():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = _run("--device", "cuda", "--parts", "lens_bank", timeout=120)
    assert proc.returncode == 2
    assert "torch.cuda.is_available() is False" in proc.stderr and "--device cpu --smoke" in proc.stderr
    assert proc.stdout == ""


def test_save_with_smoke_is_refused():
    proc = _run("--device", "cpu", "--smoke", "--save", timeout=60)
    assert proc.returncode == 2 and "--save keeps real runs only" in proc.stderr


def _sink(suite, tmp_path):
    return suite.Sink(tmp_path / "lines.jsonl", {"device": "cpu"})


def test_a_part_past_its_cap_is_cut_and_recorded(suite, tmp_path):
    def slow(ctx, emit):
        emit("first", value=1)
        while True:
            time.sleep(0.01)

    ctx = suite.Ctx("cpu", True, tmp_path)
    sink = _sink(suite, tmp_path)
    t0 = time.perf_counter()
    out = suite.run_part(suite.Part("slow", slow, cap_s=0.3, min_s=0.1), ctx, sink, left_s=100)
    assert time.perf_counter() - t0 < 5
    assert out.status == "timeout" and out.lines == 1
    assert [(r["figure"], r["status"]) for r in sink.records] == [("first", "ok"), ("slow", "timeout")]


def test_a_part_is_skipped_when_the_budget_is_short_and_errors_do_not_stop_the_suite(suite, tmp_path):
    def broken(ctx, emit):
        raise ValueError("bad size")

    ctx = suite.Ctx("cpu", True, tmp_path)
    sink = _sink(suite, tmp_path)
    skipped = suite.run_part(suite.Part("big", broken, cap_s=60, min_s=30), ctx, sink, left_s=10)
    failed = suite.run_part(suite.Part("broken", broken, cap_s=60, min_s=1), ctx, sink, left_s=10)
    assert (skipped.status, failed.status) == ("skipped", "error")
    assert "needs at least 30 s" in sink.records[0]["reason"]
    assert sink.records[1]["error"] == "ValueError: bad size"
    sink.close()
    assert len((tmp_path / "lines.jsonl").read_text().splitlines()) == 2


def test_results_are_kept_from_real_runs_only(suite, tmp_path):
    from cortex.errors import InputError

    header = {"part": "suite", "figure": "header", "date": "2026-12-04T07:00:00+00:00", "device_name": "NVIDIA H200",
              "smoke": False, "commit": "abc"}
    records = [header, {"part": "compile", "figure": "compile", "status": "ok", "eager_ms_per_step": 3.0}]
    first = suite.save_results(records, tmp_path)
    second = suite.save_results(records, tmp_path)
    assert (first.name, second.name) == ("gpu_suite-2026-12-04-nvidia-h200.jsonl", "gpu_suite-2026-12-04-nvidia-h200-2.jsonl")
    assert [json.loads(x) for x in first.read_text().splitlines()] == records
    with pytest.raises(InputError, match="smoke"):
        suite.save_results([{**header, "smoke": True}], tmp_path)
    with pytest.raises(InputError, match="header"):
        suite.save_results(records[1:], tmp_path)
