"""`cortex train` end to end on a tiny config, and the registry entry a run leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cortex.cli.main import main
from cortex.hub.registry import Registry

TINY = [
    "experiment=ehrlich", "trainer=fast", "trainer.max_epochs=2", "trainer.batch_size=16", "trainer.num_threads=1",
    "trainer.ema_decay=0.9", "data.ehrlich.options.num_samples=80", "data.ehrlich.options.dim=11",
    "data.ehrlich.options.motif_length=3", "tree.roots.seq.hidden_dim=7", "tree.roots.seq.out_dim=7",
    "tree.roots.seq.embed_dim=5", "tree.roots.seq.num_blocks=1", "tree.branches.shared.out_dim=7",
    "tree.branches.shared.hidden_dim=7",
]


def test_cli_train_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, f"trainer.output_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "final validation metrics" in printed and "registered" in printed and "ehrlich-tree" in printed
    entry = Registry().get("ehrlich-tree")
    assert entry.kind == "tree" and entry.parents == []  # built-in root: no backbone to point at
    assert entry.extra["config"]["trainer"]["max_epochs"] == 2
    assert entry.extra["config"]["data"]["ehrlich"]["options"]["dim"] == 11
    metrics = entry.extra["metrics"]
    assert {"val/value/rmse", "val/value/spearman_rho", "val/lm/perplexity", "val/loss"} <= set(metrics)
    assert entry.extra["steps"] == 2 * 5  # 72 training rows / 16 per batch, 2 epochs
    from transformers import AutoModel

    tree = AutoModel.from_pretrained(Registry().path("ehrlich-tree"))
    assert type(tree).__name__ == "NeuralTreeModel" and set(tree.config.leaves) == {"value", "lm"}
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    lines = (out / "logs" / "metrics.csv").read_text().splitlines()
    assert "val/value/rmse" in lines[0] and len(lines) > 2


def test_cli_show_config_and_bad_keys(capsys):
    assert main(["train", "experiment=ehrlich", "trainer.lr=0.25", "--cfg"]) == 0
    shown = capsys.readouterr().out
    assert "lr: 0.25" in shown and "kind: denoising_lm" in shown
    assert main(["train", "experiment=ehrlich", "trainer.max_epoch=1"]) != 0
    err = capsys.readouterr().err
    assert "trainer.max_epochs" in err and "Traceback" not in err


def test_tree_with_an_hf_backbone_lists_it_as_parent(tmp_path, minilm_dir):
    """An HF root from the registry: the trained tree's entry names that backbone as its parent."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from cortex.training.config import compose_config
    from cortex.training.experiment import run_experiment

    backbone = tmp_path / "tiny-bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=12, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=24, max_position_embeddings=64)).save_pretrained(backbone)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(backbone)
    reg = Registry()
    with reg.stage() as staged:
        for f in backbone.iterdir():
            (Path(staged) / f.name).write_bytes(f.read_bytes())
        reg.register(staged, name="tiny-bert", kind="model", source="custom", family="encoder")
    rows = tmp_path / "toy.jsonl"
    words = ["apple pie", "green tree", "blue sky", "red car", "tall tower", "small cat", "old road"]
    rows.write_text("\n".join(json.dumps({"text": w, "topic": i % 2}) for i, w in enumerate(words * 3)))
    cfg = compose_config(["experiment=routing", "trainer=fast", "trainer.batch_size=8", f"trainer.output_dir={tmp_path / 'run'}"])
    cfg["tree"]["roots"] = {"text": {"kind": "hf", "source": "tiny-bert", "pooling": "mean", "max_len": 32}}
    cfg["data"] = {"toy": {"source": str(rows), "val_fraction": 0.3}}
    cfg["tasks"] = {"topic": {"kind": "classification", "data": "toy", "inputs": {"text": "text"}, "target": "topic"}}
    cfg["output"] = {"name": "toy-tree", "register": True}
    result = run_experiment(cfg, registry=reg)
    assert result.entry.parents == ["tiny-bert"]
    assert reg.get("toy-tree").extra["tasks"] == {"topic": "classification"}
    assert "val/topic/accuracy" in result.fit.metrics
