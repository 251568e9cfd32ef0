"""import-model from local folders and from the (fake-transport) Hub, with every refusal."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch

from cortex.errors import (
    ChecksumError,
    LicenseError,
    ResourceError,
    SourceError,
    UnsafeWeightsError,
    UnsupportedArchitectureError,
)
from cortex.hub import Registry
from cortex.hub.importer import import_model
from cortex.hub.loading import load_model
from cortex.hub.sources import parse_source


def test_local_import_records_metadata_and_loads(tiny_qwen_dir):
    report = import_model(str(tiny_qwen_dir), name="tiny")
    e = report.entry
    assert (e.kind, e.family, e.source, e.license) == ("model", "qwen", str(tiny_qwen_dir.resolve()), "unknown")
    assert "model.safetensors" in e.files and "tokenizer.json" in e.files and "config.json" in e.files
    assert report.params == sum(p.numel() for p in load_model("tiny").model.parameters())
    assert import_model(str(tiny_qwen_dir), name="tiny").entry.name == "tiny-v2"


def test_minilm_imports_as_encoder(minilm_dir):
    e = import_model(str(minilm_dir), name="minilm").entry
    assert e.family == "encoder" and e.license == "apache-2.0"
    loaded = load_model("minilm")
    assert len(loaded.layers()) == 6
    enc = loaded.tokenizer(["a cat"], return_tensors="pt")
    with torch.no_grad():
        h = loaded.model(**enc).last_hidden_state
    assert h.shape[-1] == 384


def test_default_names():
    assert parse_source("Qwen/Qwen2.5-0.5B").default_name() == "qwen2.5-0.5b"
    assert parse_source("https://huggingface.co/Qwen/Qwen3-0.6B/tree/abc123").revision == "abc123"
    assert parse_source("hf://org/m@v1") == parse_source("org/m", "v1")


@pytest.mark.parametrize("bad", ["org//x", "a/b/c", "org/na me", "-bad/x", "org/x..y", "ftp://huggingface.co/a/b"])
def test_malformed_hub_ids(bad):
    with pytest.raises(SourceError):
        parse_source(bad)


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    with pytest.raises(SourceError, match="no config.json"):
        import_model(str(tmp_path / "notes"))
    with pytest.raises(SourceError, match="does not exist"):
        import_model("./no/such/folder")


def test_unsupported_architecture_lists_families(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=8, n_layer=1, n_head=2, vocab_size=11, n_positions=8,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedArchitectureError, match="qwen.*encoder.*char_lm"):
        import_model(str(tmp_path / "gpt2"))
    assert Registry().names() == []


def test_pickle_weights_refused_then_converted(tmp_path, tiny_qwen_dir):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_qwen_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(UnsafeWeightsError, match="--allow-pickle"):
        import_model(str(folder))
    e = import_model(str(folder), name="converted", allow_pickle=True).entry
    assert "model.safetensors" in e.files and not any(f.endswith(".bin") for f in e.files)
    assert e.extra["converted_from_pickle"] is True
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(load_model("converted").model(ids).logits, model.eval()(ids).logits)


def test_restrictive_license_needs_acceptance(tmp_path, tiny_qwen_dir):
    folder = tmp_path / "licensed"
    shutil.copytree(tiny_qwen_dir, folder)
    (folder / "README.md").write_text("---\nlicense: llama3\n---\n# model\n")
    with pytest.raises(LicenseError, match="--accept-license"):
        import_model(str(folder))
    e = import_model(str(folder), accept_license=True).entry
    assert e.license == "llama3" and e.license_accepted


def test_model_too_big_for_ram_is_refused(tmp_path, tiny_qwen_dir):
    folder = tmp_path / "huge"
    shutil.copytree(tiny_qwen_dir, folder)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 0]}}).encode()
    (folder / "extra.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ResourceError, match="--force"):
        import_model(str(folder))


def test_interrupt_or_full_disk_mid_import_keeps_registry_clean(tiny_qwen_dir, cortex_home):
    import errno

    def interrupt(msg):
        if msg.startswith("checking"):
            raise KeyboardInterrupt

    def disk_full(msg):
        if msg.startswith("checking"):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(KeyboardInterrupt):
        import_model(str(tiny_qwen_dir), status=interrupt)
    with pytest.raises(ResourceError, match="disk"):
        import_model(str(tiny_qwen_dir), status=disk_full)
    assert Registry().names() == []
    assert not list((cortex_home / "models" / ".staging").iterdir())


def test_changed_weights_refuse_to_load(tiny_qwen_dir, cortex_home):
    import_model(str(tiny_qwen_dir), name="tiny")
    w = cortex_home / "models" / "tiny" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="model.safetensors"):
        load_model("tiny")


# ---------------------------------------------------------------- the Hub, through a fake transport
def _publish(fake_hub, repo: str, folder, license_id: str | None = None):
    dest = fake_hub.root / repo
    shutil.copytree(folder, dest)
    if license_id:
        (dest / "README.md").write_text(f"---\nlicense: {license_id}\n---\n")
    return dest


def test_hub_import_pins_revision(fake_hub, tiny_qwen_dir, tmp_path):
    from tests.fakehub import _commit_of
    from tests.hub.conftest import make_tiny_qwen

    _publish(fake_hub, "acme/Tiny-Qwen", tiny_qwen_dir, "apache-2.0")
    other = make_tiny_qwen(tmp_path / "v1", seed=1)
    fake_hub.add_revision("acme/Tiny-Qwen", "v1", other)
    main = import_model("acme/Tiny-Qwen").entry
    assert main.name == "tiny-qwen" and main.license == "apache-2.0"
    assert main.revision == _commit_of(fake_hub.root / "acme/Tiny-Qwen")
    assert main.source == f"hf://acme/Tiny-Qwen@{main.revision}" and main.model_id == "acme/Tiny-Qwen"
    v1 = import_model("https://huggingface.co/acme/Tiny-Qwen", revision="v1").entry
    assert v1.name == "tiny-qwen-v2" and v1.revision == _commit_of(fake_hub.root / ".revisions/acme/Tiny-Qwen/v1")
    assert v1.files["model.safetensors"] != main.files["model.safetensors"]
    # downloads asked for the resolved commit, never a moving branch
    resolves = [p for m, p in fake_hub.requests if "/resolve/" in p]
    assert resolves and all(main.revision in p or v1.revision in p for p in resolves)


def test_hub_errors(fake_hub, tiny_qwen_dir):
    _publish(fake_hub, "acme/tiny", tiny_qwen_dir)
    with pytest.raises(SourceError, match="Revision 'nope' does not exist"):
        import_model("acme/tiny", revision="nope")
    with pytest.raises(SourceError, match="No model repository 'acme/missing'"):
        import_model("acme/missing")
    assert Registry().names() == []
