"""`cortex rag ...` through the real entry point on a tiny repository."""

from __future__ import annotations

import json

from cortex.cli.main import main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_rag_index_query_context_outcome(repo, tmp_path, capsys):
    idx = str(tmp_path / "idx")
    code, out, _ = run(capsys, "rag", "index", str(repo), "--index-dir", idx, "--max-file-kb", "4")
    assert code == 0, out
    assert "4 added" in out and "skipped 3 (binary 1, encoding 1, too_large 1)" in out

    # built with --precision auto, updated with fp32: the same model's vectors, so the index opens
    code, out, _ = run(capsys, "rag", "index", str(repo), "--index-dir", idx, "--max-file-kb", "4", "--precision", "fp32")
    assert code == 0 and "0 added, 0 changed, 0 removed, 4 unchanged" in out and "0 embedded" in out

    code, out, _ = run(capsys, "rag", "query", "learning rate warmup", "-k", "2", "--index-dir", idx, "--json")
    assert code == 0
    first = json.loads(out.splitlines()[0])
    assert first["path"] == "pkg/mathutil.py" and first["name"] == "learning_rate_schedule"

    code, out, _ = run(capsys, "rag", "context", "make registry writes atomic", "--index-dir", idx,
                       "--task-id", "job-5", "--budget", "500", "--json")
    ctx = json.loads(out)
    assert code == 0 and ctx["tokens"] <= 500 and ctx["template"] == "worker" and ctx["task_id"] == "job-5"
    assert "pkg/registry.py:L14-L21" in ctx["citations"]

    code, out, _ = run(capsys, "rag", "outcome", "job-5", "--success", "--score", "0.8")
    assert code == 0 and "worker v1" in out
    code, out, _ = run(capsys, "rag", "template", "stats", "worker")
    assert code == 0 and "1.000" in out


def test_rag_templates_and_errors(repo, tmp_path, capsys):
    tpl = tmp_path / "t.txt"
    tpl.write_text("Solve: {task}\n{context}")
    assert run(capsys, "rag", "template", "add", "solver", str(tpl))[0] == 0
    tpl.write_text("Please solve: {task}\n{context}")
    code, out, _ = run(capsys, "rag", "template", "add", "solver", str(tpl), "--note", "polite")
    assert code == 0 and "solver v2" in out
    assert run(capsys, "rag", "template", "ab", "solver", "--versions", "1,2")[0] == 0
    code, out, _ = run(capsys, "rag", "template", "list")
    assert "solver: versions [1, 2]  A/B [1, 2]" in out
    code, out, _ = run(capsys, "rag", "template", "show", "solver", "--version", "1")
    assert out.startswith("Solve: {task}")

    tpl.write_text("{nope}")
    code, _, err = run(capsys, "rag", "template", "add", "solver", str(tpl))
    assert code == 1 and "Unknown key 'nope'" in err
    code, _, err = run(capsys, "rag", "query", "x", "--index-dir", str(tmp_path / "none"))
    assert code == 1 and "cortex rag index PATH" in err
    code, _, err = run(capsys, "rag", "index", str(tmp_path / "missing"), "--index-dir", str(tmp_path / "i2"))
    assert code == 1 and "is not a folder" in err
    code, _, err = run(capsys, "rag", "index", str(repo), "--index-dir", str(tmp_path / "i3"), "--precision", "fp8")
    assert code == 1 and "precision='fp8' is not one of auto, fp32, bf16" in err


def test_rag_memory(capsys):
    for tid, summary, master, ok in [("m1", "Prove that the square root of 2 is irrational", "math", True),
                                     ("m2", "Summarise the causes of World War I", "humanities", True),
                                     ("m3", "Compute the derivative of x^3 sin x", "math", False)]:
        code, out, _ = run(capsys, "rag", "memory", "add", tid, "--summary", summary, "--master", master,
                           "--success" if ok else "--failure")
        assert code == 0
    assert "3 tasks in memory" in out
    code, out, _ = run(capsys, "rag", "memory", "search", "differentiate x^2 cos x", "-k", "2")
    assert code == 0 and out.splitlines()[0].split()[1] == "m3" and "vote: {'math'" in out
