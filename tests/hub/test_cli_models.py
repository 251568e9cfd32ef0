"""The registry CLI end to end on a real tiny Qwen2, plus the process-level guarantees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cortex.cli.main import main
from cortex.hub import Registry


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_import_list_show_verify_generate_finetune_lineage(capsys, tiny_qwen_dir, tmp_path):
    assert run(capsys, "import-model", str(tiny_qwen_dir), "--name", "tiny")[0] == 0
    code, out, _ = run(capsys, "models", "list", "--json")
    assert code == 0 and [e["name"] for e in json.loads(out)] == ["tiny"]
    code, out, _ = run(capsys, "models", "show", "tiny")
    assert json.loads(out)["family"] == "qwen"
    code, out, _ = run(capsys, "models", "verify", "tiny")
    assert code == 0 and "tiny: ok" in out
    code, out, _ = run(capsys, "generate", "tiny", "the cat", "--max-new-tokens", "8", "--seed", "1")
    assert code == 0 and out.startswith("the cat") and len(out.strip()) > len("the cat")

    data = tmp_path / "lines.txt"
    data.write_text("the cat sat on the mat.\nthe dog sat on the log.\n" * 20)
    code, out, err = run(capsys, "finetune", "tiny", "--data", str(data), "--max-steps", "20", "--block-size", "32",
                         "--batch-size", "4", "--lr", "3e-3", "--name", "tiny-ft")
    assert code == 0, err
    e = Registry().get("tiny-ft")
    ft = e.extra["finetune"]
    assert e.fine_tuned_from == "tiny" and ft["steps"] == 20 and ft["final_loss"] < ft["first_loss"]
    code, out, _ = run(capsys, "models", "lineage", "tiny-ft", "--json")
    assert json.loads(out)["ancestors"]["parents"][0]["name"] == "tiny"
    code, out, _ = run(capsys, "generate", "tiny-ft", "the ", "--max-new-tokens", "12", "--temperature", "0")
    assert code == 0 and out.startswith("the ")
    code, out, _ = run(capsys, "generate", "tiny-ft", "the ", "--max-new-tokens", "5", "--quantize", "int8", "--seed", "0")
    assert code == 0 and out.startswith("the ")
    assert run(capsys, "models", "cp", "tiny-ft", "tiny-ft2")[0] == 0
    assert run(capsys, "models", "rm", "tiny-ft2")[0] == 0
    code, out, _ = run(capsys, "models", "families")
    assert "qwen" in out and "encoder" in out and "char_lm" in out


def test_lora_finetune_registers_merged_model(tiny_qwen_dir, tmp_path):
    from cortex.hub.importer import import_model
    from cortex.hub.loading import load_model
    from cortex.training.finetune import FinetuneSettings, finetune

    import_model(str(tiny_qwen_dir), name="tiny")
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"sample {i} is here"}) for i in range(30)))
    e = finetune("tiny", data, settings=FinetuneSettings(max_steps=6, lora=True, block_size=16, batch_size=2, lr=1e-2))
    assert e.name.startswith("tiny-finetuned-") and e.extra["finetune"]["lora"] is True
    m = load_model(e.name).model
    assert not any("lora" in n for n, _ in m.named_parameters())


def test_char_lm_from_scratch_via_cli(capsys, tmp_path):
    assert run(capsys, "models", "new", "scratch", "--hidden-size", "32", "--layers", "2", "--heads", "4")[0] == 0
    data = tmp_path / "t.txt"
    data.write_text("abcabcabc " * 200)
    code, _, err = run(capsys, "finetune", "scratch", "--data", str(data), "--max-steps", "30", "--lr", "1e-2",
                       "--block-size", "32", "--name", "scratch-trained")
    assert code == 0, err
    ft = Registry().get("scratch-trained").extra["finetune"]
    assert ft["final_loss"] < 0.6 * ft["first_loss"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["models", "show", "tny"], "No registry entry named 'tny'"),
        (["import-model", "org//bad"], "Malformed Hub id"),
        (["import-model", "/no/such/dir"], "does not exist"),
        (["import-model", "x/y", "--name", "../evil"], "contains a path separator"),
        (["generate", "nothing", "hi"], "cortex models list"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code != 0 and message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3


def test_cli_subprocess_has_no_traceback(tmp_path):
    env = {**os.environ, "CORTEX_HOME": str(tmp_path / "h")}
    p = subprocess.run([sys.executable, "-m", "cortex.cli.main", "models", "show", "missing"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 1 and "error:" in p.stderr and "Traceback" not in p.stderr
    v = subprocess.run([sys.executable, "-m", "cortex.cli.main", "--version"], capture_output=True, text=True, env=env)
    assert v.returncode == 0 and v.stdout.startswith("cortex ")


IMPORT_SNIPPET = (
    "import sys; from cortex.hub.importer import import_model; "
    "import_model(sys.argv[1], name=sys.argv[2])"
)


def test_four_concurrent_imports(tiny_qwen_dir, cortex_home):
    env = {**os.environ, "CORTEX_HOME": str(cortex_home)}
    procs = [subprocess.Popen([sys.executable, "-c", IMPORT_SNIPPET, str(tiny_qwen_dir), "same"], env=env)
             for _ in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    reg = Registry()
    index = json.loads((cortex_home / "models" / "registry.json").read_text())
    assert sorted(index["entries"]) == ["same", "same-v2", "same-v3", "same-v4"]
    for name in reg.names():
        assert reg.verify(name) == {"changed": [], "missing": [], "extra": []}


def test_sigkill_mid_import_leaves_valid_registry(minilm_dir, tiny_qwen_dir, cortex_home):
    from cortex.hub.importer import import_model

    import_model(str(tiny_qwen_dir), name="before")
    env = {**os.environ, "CORTEX_HOME": str(cortex_home)}
    staging = cortex_home / "models" / ".staging"
    killed_mid_import = 0
    for delay in (0.0, 0.2, 0.6):
        p = subprocess.Popen([sys.executable, "-c", IMPORT_SNIPPET, str(minilm_dir), "victim"], env=env)
        deadline = time.time() + 60
        while time.time() < deadline and not (staging.is_dir() and any(staging.iterdir())):
            time.sleep(0.02)
        time.sleep(delay)
        killed_mid_import += p.poll() is None
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert killed_mid_import >= 2
    reg = Registry()
    index = json.loads((cortex_home / "models" / "registry.json").read_text())
    assert "before" in index["entries"]
    for name in reg.names():  # whatever made it in is complete
        assert reg.verify(name)["missing"] == [] and reg.verify(name)["changed"] == []
    import_model(str(tiny_qwen_dir), name="after")  # the next write sweeps leftovers
    leftovers = [d.name for d in (cortex_home / "models").iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert sorted(leftovers) == sorted(Registry().names())
    assert not list((cortex_home / "models" / ".staging").iterdir())


def test_killed_finetune_resumes(tiny_qwen_dir, cortex_home, tmp_path):
    from cortex.hub.importer import import_model

    import_model(str(tiny_qwen_dir), name="tiny")
    data = tmp_path / "d.txt"
    data.write_text("resumable training text. " * 100)
    env = {**os.environ, "CORTEX_HOME": str(cortex_home)}
    cmd = [sys.executable, "-m", "cortex.cli.main", "finetune", "tiny", "--data", str(data), "--max-steps", "400",
           "--save-every", "5", "--block-size", "16", "--batch-size", "2", "--name", "tiny-resumed"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_root = cortex_home / "runs" / "finetune"
    deadline = time.time() + 120
    while time.time() < deadline and not list(ckpt_root.glob("*/checkpoint/state.json")):
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert list(ckpt_root.glob("*/checkpoint/state.json")), "no checkpoint was written before the kill"
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    ft = Registry().get("tiny-resumed").extra["finetune"]
    assert ft["resumed_from_step"] >= 5 and ft["steps"] == 400


def test_usage_errors_are_short(capsys):
    code, out, err = run(capsys, "no-such-command")
    assert code == 2 and "No such command" in err and "Traceback" not in err
