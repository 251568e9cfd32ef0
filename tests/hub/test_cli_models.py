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
    from cortex.training.finetune import finetune
    from cortex.training.settings import FinetuneSettings

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
    ckpt = next(ckpt_root.glob("*/checkpoint"))
    assert (ckpt / "rng.safetensors").is_file() and not list(ckpt.glob("rng.pt"))  # no pickle to resume
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    ft = Registry().get("tiny-resumed").extra["finetune"]
    assert ft["resumed_from_step"] >= 5 and ft["steps"] == 400


def test_usage_errors_are_short(capsys):
    code, out, err = run(capsys, "no-such-command")
    assert code == 2 and "No such command" in err and "Traceback" not in err


def test_list_table_keeps_long_names_and_checks_kind(capsys, tiny_qwen_dir):
    long_name = "a-rather-long-model-name-that-a-rich-table-would-have-cut-20261203-042544"
    assert run(capsys, "import-model", str(tiny_qwen_dir), "--name", long_name)[0] == 0
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and long_name in out.splitlines()[1]
    code, _, err = run(capsys, "models", "list", "--kind", "modle")
    assert code == 1 and "Did you mean 'model'" in err


def test_generate_refuses_an_encoder_before_printing(capsys, tmp_path):
    from transformers import BertConfig, BertModel

    from cortex.data.tokenizers import build_char_tokenizer

    tok = build_char_tokenizer()
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    assert run(capsys, "import-model", str(tmp_path / "bert"), "--name", "enc")[0] == 0
    code, out, err = run(capsys, "generate", "enc", "hello")
    assert code == 1 and out == "" and "cannot generate text" in err


def test_ctrl_c_and_exit_codes_come_back_from_commands(capsys, monkeypatch, tiny_qwen_dir):
    import cortex.hub.importer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cortex.hub.importer, "import_model", interrupted)
    code, _, err = run(capsys, "import-model", str(tiny_qwen_dir))
    assert code == 130 and "interrupted" in err and "Traceback" not in err


def test_unreachable_hub_is_one_clear_line(capsys):
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    def no_network(request):
        raise httpx2.ConnectError("[Errno -2] Name or service not known", request=request)

    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(no_network)))
    try:
        code, _, err = run(capsys, "import-model", "Qwen/Qwen2.5-0.5B", "--revision", "v1")
    finally:
        set_client_factory(default_client_factory)
    assert code == 1 and "Could not reach the Hub for 'Qwen/Qwen2.5-0.5B'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3


def test_registry_commands_start_without_torch(tmp_path):
    """`cortex --help`, `models list` and friends never import torch or transformers (start-up speed)."""
    code = (
        "import sys; from cortex.cli.main import main; "
        "assert main(['models', 'list']) == 0 and main(['models', 'list', '--json']) == 0; "
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    env = {**os.environ, "CORTEX_HOME": str(tmp_path / "h")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("first_import", [
    "import cortex",
    "import cortex.models.char_lm",  # transformers first imported from inside a cortex model module
    "from cortex.models.neural_tree import NeuralTreeConfig",
    "import transformers, cortex",
])
def test_import_cortex_registers_auto_classes(first_import):
    code = (
        f"{first_import}\n"
        "from transformers import AutoConfig\n"
        "assert type(AutoConfig.for_model('cortex_char_lm')).__name__ == 'CharLMConfig'\n"
        "assert type(AutoConfig.for_model('neural_tree')).__name__ == 'NeuralTreeConfig'\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_selection_by_config_resolves_registry_names_and_builds_char_lm(capsys, tiny_qwen_dir, tmp_path):
    from cortex.errors import ConfigError
    from cortex.models.selection import build_model
    from cortex.training.finetune import FinetuneRun

    assert run(capsys, "import-model", str(tiny_qwen_dir), "--name", "tiny")[0] == 0
    model, _, family = build_model({"model_name": "tiny"})  # inference: a name resolves through the registry
    assert family.name == "qwen" and model.config.hidden_size == 32
    model, tok, family = build_model({"model_name": None, "char_lm": {"hidden_size": 24, "num_hidden_layers": 3}})
    assert family.name == "char_lm" and model.config.hidden_size == 24 and model.config.vocab_size == len(tok)
    with pytest.raises(ConfigError, match="max_stepz"):
        FinetuneRun.from_mapping({"model_name": "tiny", "max_stepz": 3})

    (tmp_path / "t.txt").write_text("abcabc " * 100)
    (tmp_path / "run.yaml").write_text(  # training: model_name null = the built-in char_lm from the config
        "model_name: null\nchar_lm: {hidden_size: 24, num_hidden_layers: 2, num_attention_heads: 4}\n"
        "data: t.txt\nmax_steps: 7\nblock_size: 16\nbatch_size: 3\nname: from-config\n"
    )
    code, _, err = run(capsys, "finetune", "--config", str(tmp_path / "run.yaml"))
    assert code == 0, err
    e = Registry().get("from-config")
    assert e.family == "char_lm" and e.fine_tuned_from is None and e.extra["finetune"]["steps"] == 7
    assert e.extra["finetune"]["model_selection"]["char_lm"]["hidden_size"] == 24
    (tmp_path / "ft.json").write_text(json.dumps({"model_name": "tiny", "data": "t.txt", "max_steps": 3,
                                                  "block_size": 16, "name": "tiny-from-config"}))
    assert run(capsys, "finetune", "--config", str(tmp_path / "ft.json"))[0] == 0
    assert Registry().get("tiny-from-config").fine_tuned_from == "tiny"
