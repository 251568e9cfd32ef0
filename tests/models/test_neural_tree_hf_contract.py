"""A NeuralTree behaves like a transformers PreTrainedModel (issue 14, part B).

ModelOutputs and the loss of ``forward(targets=...)`` (the Lightning module's own definition),
``transformers.Trainer`` training and evaluating a tree, ``torch.export``, gradient checkpointing,
one dtype after ``from_pretrained(dtype=...)``, ``attn_implementation``, input embeddings,
safetensors only, and loading through ``auto_map`` in a process that never imported cortex.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, BertConfig, BertModel, BertTokenizer, Qwen2Config, Qwen2Model
from transformers.utils import ModelOutput

import cortex  # noqa: F401
from cortex.errors import ConfigError, ModelInputError, UnsafeWeightsError
from cortex.models.neural_tree import NeuralTreeConfig, NeuralTreeModel, NeuralTreeOutput, weighted_loss_sum

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "a", "mat", "dog", "ran"]


def _tiny_bert(folder: Path) -> Path:
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=11, max_position_embeddings=13)).save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    return folder


def _tiny_qwen(folder: Path) -> Path:
    torch.manual_seed(1)
    Qwen2Model(Qwen2Config(vocab_size=29, hidden_size=8, intermediate_size=11, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, max_position_embeddings=32)).save_pretrained(folder)
    return folder


def _to_pickle_only(folder: Path) -> None:
    """Replace ``model.safetensors`` by the same tensors in ``pytorch_model.bin`` (a pickle)."""
    state = load_file(folder / "model.safetensors")
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def _builtin_tree(**leaves) -> NeuralTreeModel:
    torch.manual_seed(3)
    return NeuralTreeModel(NeuralTreeConfig(
        roots={"p": {"kind": "conv1d", "out_dim": 7, "embed_dim": 5, "hidden_dim": 5, "num_blocks": 2},
               "t": {"kind": "transformer", "tokenizer": "char", "hidden_dim": 4, "num_heads": 2, "num_layers": 1}},
        trunk={"kind": "concat"},
        branches={"b": {"kind": "transformer", "out_dim": 4, "pooling": "attention"}},
        leaves=leaves or {"y": {"kind": "regressor", "branch": "b", "ensemble_size": 3},
                          "k": {"kind": "classifier", "branch": "b", "num_classes": 5}},
    )).eval()


# ----------------------------------------------------------------------------------- outputs and loss
def test_outputs_are_model_outputs_and_loss_is_the_weighted_leaf_losses():
    tree = _builtin_tree()
    inputs = tree.dummy_inputs
    y, k = torch.tensor([[0.5], [-1.0]]), torch.tensor([1, 4])
    out = tree(inputs, targets={"y": y, "k": k}, loss_weights={"y": 0.25})
    assert isinstance(out, ModelOutput) and isinstance(out.leaf_outputs["y"], ModelOutput)
    assert out["loss"] is out.loss and out[0] is out.loss and out.to_tuple()[0] is out.loss
    assert isinstance(out.root_outputs["p"], ModelOutput) and out["trunk_outputs"].root_spans == {"p": (0, 7), "t": (7, 14)}
    by_leaf = {"y": tree.leaf_loss("y", out, y), "k": tree.leaf_loss("k", out, k)}
    torch.testing.assert_close(out.leaf_losses["y"], by_leaf["y"])
    torch.testing.assert_close(out.loss, 0.25 * by_leaf["y"] + by_leaf["k"])
    torch.testing.assert_close(tree.loss(out, {"y": y, "k": k}, {"y": 0.25}), out.loss)
    # no targets: no loss key, as in every HF output; only the targets' leaves run when leaf_keys is omitted
    plain = tree(inputs)
    assert plain.loss is None and "loss" not in plain.keys()
    assert list(tree(inputs, targets={"k": k}).leaf_outputs) == ["k"]
    with pytest.raises(ModelInputError, match="targets name leaves"):
        tree(inputs, leaf_keys=["y"], targets={"k": k})
    with pytest.raises(ModelInputError, match="loss_weights"):
        tree(inputs, targets={"k": k}, loss_weights={"y": 1.0})


def test_lightning_module_loss_is_the_forward_loss():
    from cortex.tasks import ClassificationTask, RegressionTask
    from cortex.training.module import NeuralTreeModule

    tasks = [ClassificationTask("k", inputs={"p": "a", "t": "b"}, target="label", num_classes=5, weight=0.5),
             RegressionTask("y", inputs={"p": "a", "t": "b"}, targets=["v"], weight=2.0)]
    tree = _builtin_tree(**{t.leaf_key: t.leaf_spec("b") for t in tasks})
    inputs = tree.dummy_inputs
    columns = {"label": torch.tensor([3, 0]), "v": torch.tensor([1.5, -0.5])}
    batch = {t.name: {"inputs": inputs, "targets": columns} for t in tasks}
    module = NeuralTreeModule(tree, tasks)
    lightning_total = module._weighted_total(module._task_losses(batch, True, [t.name for t in tasks]))
    forward = tree(inputs, targets={t.leaf_key: t.leaf_targets(batch[t.name]) for t in tasks},
                   loss_weights={t.leaf_key: t.weight for t in tasks})
    torch.testing.assert_close(lightning_total, forward.loss)
    assert weighted_loss_sum({"a": torch.tensor(2.0), "b": torch.tensor(3.0)}, {"a": 0.5}) == 4.0


# --------------------------------------------------------------------------------------------- Trainer
def _w_dataset(n: int = 64):
    from datasets import Dataset

    rng = random.Random(0)
    rows = []
    for i in range(n):
        s = "".join(rng.choice("ACDEFGHIKLMNPQRSTVY") for _ in range(rng.randint(5, 11)))
        if i % 2:
            s = s[:2] + "WW" + s[2:]
        rows.append({"seq": s, "has_w": i % 2, "length": float(len(s))})
    return Dataset.from_list(rows)


def test_hf_trainer_trains_and_evaluates_a_tree(tmp_path):
    from transformers import Trainer, TrainingArguments

    from cortex.data import tokenize_dataset
    from cortex.tasks import ClassificationTask, RegressionTask, TaskCollator, leaf_predictions

    tasks = [ClassificationTask("has_w", inputs={"p": "seq"}, target="has_w", num_classes=2),
             RegressionTask("length", inputs={"p": "seq"}, targets=["length"], weight=0.5)]
    torch.manual_seed(0)
    tree = NeuralTreeModel(NeuralTreeConfig(
        roots={"p": {"kind": "conv1d", "embed_dim": 8, "hidden_dim": 8, "out_dim": 8, "num_blocks": 1}},
        branches={"b": {"kind": "mlp", "out_dim": 8, "hidden_dim": 8}},
        leaves={t.leaf_key: t.leaf_spec("b") for t in tasks},
    ))
    data = _w_dataset()
    tasks[1].fit(tree, data)
    tokenizers = tree.root_tokenizers()
    data = tokenize_dataset(data, tokenizers, {"p": "seq"})
    train, held_out = data.select(range(48)), data.select(range(48, 64))

    def accuracy(pred):
        return {"has_w_accuracy": float((pred.predictions["has_w"].argmax(-1) == pred.label_ids["has_w"]).mean())}

    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=8, num_train_epochs=10,
        learning_rate=3e-2, remove_unused_columns=False, label_names=["targets"], report_to=[], logging_steps=6,
        save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=tree, args=args, train_dataset=train, eval_dataset=held_out,
                      data_collator=TaskCollator(tasks, tokenizers), compute_metrics=accuracy,
                      preprocess_logits_for_metrics=leaf_predictions)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < 0.8 * losses[0]
    assert after["eval_loss"] < 0.8 * before["eval_loss"]
    assert before["eval_has_w_accuracy"] == 0.5 and after["eval_has_w_accuracy"] >= 0.9
    assert trainer.state.total_flos > 0  # FLOP count reads main_input_name through TreeInputs.numel


def test_task_collator_refuses_corrupting_tasks():
    from cortex.tasks import DenoisingLMTask, TaskCollator

    with pytest.raises(ConfigError, match="fit_tree"):
        TaskCollator([DenoisingLMTask("mlm", inputs={"p": "seq"})], {"p": None})


# ---------------------------------------------------------------------------------------------- export
def test_torch_export_of_a_tree_with_builtin_roots():
    tree = _builtin_tree()
    inputs = tree.dummy_inputs
    targets = {"y": torch.randn(2, 1), "k": torch.tensor([1, 4])}
    program = torch.export.export(tree, (), {"inputs": inputs, "targets": targets})
    got, want = program.module()(inputs=inputs, targets=targets), tree(inputs, targets=targets)
    assert isinstance(got, NeuralTreeOutput)
    torch.testing.assert_close(got.loss, want.loss)
    torch.testing.assert_close(got.leaf_outputs["k"].logits, want.leaf_outputs["k"].logits)


# ------------------------------------------------------------------------------ gradient checkpointing
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tmp_path):
    bert = _tiny_bert(tmp_path / "bert")
    cfg = NeuralTreeConfig(
        roots={"p": {"kind": "transformer", "tokenizer": "protein", "hidden_dim": 8, "num_heads": 2, "num_layers": 2,
                     "dropout": 0.1},
               "w": {"kind": "hf", "source": str(bert), "pooling": "mean"}},
        trunk={"kind": "sum", "out_dim": 8},
        branches={"b": {"kind": "transformer", "out_dim": 8, "num_layers": 2, "dropout": 0.1},
                  "c": {"kind": "conv1d", "out_dim": 5}},
        leaves={"y": {"kind": "regressor", "branch": "b"}, "k": {"kind": "classifier", "branch": "c", "num_classes": 3}},
    )
    tree = NeuralTreeModel.from_pretrained_roots(cfg).train()
    inputs, targets = tree.dummy_inputs, {"y": torch.randn(2, 1), "k": torch.tensor([0, 2])}

    def step():
        torch.manual_seed(5)  # same dropout masks in both runs
        tree.zero_grad()
        out = tree(inputs, targets=targets)
        out.loss.backward()
        return out.loss.detach(), {n: p.grad.clone() for n, p in tree.named_parameters() if p.grad is not None}

    loss, grads = step()
    tree.gradient_checkpointing_enable()
    on = {type(m).__name__ for m in tree.modules() if getattr(m, "gradient_checkpointing", False)}
    assert {"TransformerBlock", "Conv1dResidBlock", "BertLayer"} <= on  # built-in blocks and the HF backbone's layers
    ckpt_loss, ckpt_grads = step()
    torch.testing.assert_close(ckpt_loss, loss, rtol=1e-6, atol=1e-7)
    assert ckpt_grads.keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(ckpt_grads[name], g, rtol=1e-5, atol=1e-7, msg=name)
    tree.gradient_checkpointing_disable()
    assert not any(getattr(m, "gradient_checkpointing", False) for m in tree.modules())


# ------------------------------------------------------------------------------- dtype and attention
def test_bf16_load_gives_one_dtype_and_trains(tmp_path):
    cfg = NeuralTreeConfig(
        roots={"w": {"kind": "hf", "source": str(_tiny_bert(tmp_path / "bert")), "pooling": "none"},
               "q": {"kind": "hf", "source": str(_tiny_qwen(tmp_path / "qwen")), "pooling": "last"}},
        trunk={"kind": "sum", "out_dim": 7},
        branches={"b": {"kind": "mlp", "out_dim": 5}},
        leaves={"y": {"kind": "regressor", "branch": "b"}, "k": {"kind": "classifier", "branch": "b", "num_classes": 3}},
    )
    NeuralTreeModel.from_pretrained_roots(cfg).save_pretrained(tmp_path / "tree")
    tree = AutoModel.from_pretrained(tmp_path / "tree", dtype=torch.bfloat16, attn_implementation="eager").train()
    assert {p.dtype for p in tree.parameters()} == {torch.bfloat16}
    assert {r.model.config._attn_implementation for r in tree.roots.values()} == {"eager"}
    out = tree(tree.dummy_inputs, targets={"y": torch.randn(2, 1), "k": torch.tensor([0, 2])})
    assert out.leaf_outputs["y"].loc.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in tree.roots["q"].model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)
    fresh = NeuralTreeModel.from_pretrained_roots(cfg, dtype=torch.bfloat16, attn_implementation="eager")
    assert {p.dtype for p in fresh.parameters()} == {torch.bfloat16}
    assert fresh.roots["w"].model.config._attn_implementation == "eager"


def test_input_embeddings_of_single_and_multi_root_trees():
    single = NeuralTreeModel(NeuralTreeConfig())
    emb = single.get_input_embeddings()
    assert emb is single.roots["protein"].embeddings
    new = torch.nn.Embedding(emb.num_embeddings, emb.embedding_dim)
    single.set_input_embeddings(new)
    assert single.get_input_embeddings() is new and single.root_embeddings("protein") is new
    with pytest.raises(ConfigError, match="root_embeddings"):
        _builtin_tree().get_input_embeddings()


# ------------------------------------------------------------------------------------- safetensors only
def test_pickle_only_tree_is_refused_without_the_flag(tmp_path):
    tree = _builtin_tree()
    tree.save_pretrained(tmp_path / "tree")
    _to_pickle_only(tmp_path / "tree")
    with pytest.raises(UnsafeWeightsError, match=r"tree.*allow_pickle=True.*--allow-pickle"):
        AutoModel.from_pretrained(tmp_path / "tree")
    with pytest.raises(UnsafeWeightsError, match="allow_pickle=True"):
        NeuralTreeModel.from_pretrained(tmp_path / "tree", use_safetensors=False)
    loaded = AutoModel.from_pretrained(tmp_path / "tree", allow_pickle=True).eval()
    torch.testing.assert_close(loaded(tree.dummy_inputs).leaf_outputs["y"].loc, tree(tree.dummy_inputs).leaf_outputs["y"].loc)
    with pytest.raises(UnsafeWeightsError, match="safetensors only"):
        tree.save_pretrained(tmp_path / "again", safe_serialization=False)


def test_pickle_only_root_source_is_refused_without_the_flag(tmp_path):
    bert = _tiny_bert(tmp_path / "bert")
    reference = BertModel.from_pretrained(bert).state_dict()
    _to_pickle_only(bert)
    cfg = NeuralTreeConfig(
        roots={"w": {"kind": "hf", "source": str(bert), "pooling": "cls"}},
        branches={"b": {"kind": "mlp", "out_dim": 5}}, leaves={"y": {"kind": "regressor", "branch": "b"}},
    )
    with pytest.raises(UnsafeWeightsError, match=rf"roots\.w\.source folder {bert}.*allow_pickle=True"):
        NeuralTreeModel.from_pretrained_roots(cfg)
    tree = NeuralTreeModel.from_pretrained_roots(cfg, allow_pickle=True)
    for key, value in reference.items():
        assert torch.equal(tree.roots["w"].model.state_dict()[key], value), key


# ----------------------------------------------------------------------------------------- auto_map
def test_auto_map_loads_a_tree_in_a_process_that_never_imported_cortex(tmp_path):
    tree = _builtin_tree()
    with torch.no_grad():  # weights of unit scale, so that the compared logits are far from 0
        for p in tree.parameters():
            p.normal_()
    tree.save_pretrained(tmp_path / "tree")
    assert (tmp_path / "tree" / "cortex_neural_tree.py").is_file()
    expected = tree(tree.dummy_inputs).leaf_outputs["k"].logits
    script = textwrap.dedent(f"""
        import sys
        from transformers import AutoModel
        assert not [m for m in sys.modules if m == "cortex" or m.startswith("cortex.")], "cortex was imported"
        try:
            AutoModel.from_pretrained({str(tmp_path / 'tree')!r})
        except ValueError as e:
            assert "trust_remote_code=True" in str(e), e
        else:
            raise SystemExit("loaded custom code without trust_remote_code")
        tree = AutoModel.from_pretrained({str(tmp_path / 'tree')!r}, trust_remote_code=True).eval()
        from cortex.models.neural_tree import NeuralTreeModel
        assert isinstance(tree, NeuralTreeModel), type(tree).__mro__
        print("LOGITS", repr(tree(tree.dummy_inputs).leaf_outputs["k"].logits.flatten().tolist()))
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout[done.stdout.index("LOGITS ") + len("LOGITS "):].splitlines()[0]
    got = torch.tensor([float(v) for v in line.strip("[]").split(",")])
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected.detach().flatten())


def test_pickle_only_hub_repo_is_refused_with_the_cortex_error(fake_hub):
    tree = _builtin_tree()
    repo = fake_hub.root / "someone" / "pickled-tree"
    tree.save_pretrained(repo)
    _to_pickle_only(repo)
    with pytest.raises(UnsafeWeightsError, match="someone/pickled-tree.*allow_pickle=True"):
        AutoModel.from_pretrained("someone/pickled-tree")
    loaded = AutoModel.from_pretrained("someone/pickled-tree", allow_pickle=True).eval()
    torch.testing.assert_close(loaded(tree.dummy_inputs).leaf_outputs["k"].logits, tree(tree.dummy_inputs).leaf_outputs["k"].logits)
