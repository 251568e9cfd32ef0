"""Save/load, AutoModel, HF roots (tiny BERT made here, packaged MiniLM), registry, push_to_hub."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModel, BertConfig, BertModel, BertTokenizer

import cortex  # noqa: F401
from cortex.corruption import CorruptionNoise, CorruptionParams, kind_weights
from cortex.hub.registry import Registry
from cortex.models.neural_tree import NeuralTreeConfig, NeuralTreeModel, register_tree

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "a", "mat", "dog", "ran"]


def _outputs_equal(a, b) -> None:
    for name, out in a.leaf_outputs.items():
        for field, value in vars(out).items():
            assert torch.equal(value, getattr(b.leaf_outputs[name], field)), (name, field)


def _tiny_bert(folder: Path) -> Path:
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=11, max_position_embeddings=13)).save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    return folder


def test_round_trip_with_every_builtin_node_and_corruption(tmp_path):
    torch.manual_seed(1)
    cfg = NeuralTreeConfig(
        roots={"p": {"kind": "conv1d", "out_dim": 7, "embed_dim": 5, "hidden_dim": 5, "num_blocks": 2,
                     "corruption": {"kind": "substitution", "substitution": "blosum62"}},
               "t": {"kind": "transformer", "tokenizer": "char", "hidden_dim": 4, "num_heads": 2, "num_layers": 1}},
        trunk={"kind": "concat"},
        branches={"b": {"kind": "transformer", "out_dim": 4, "pooling": "attention"},
                  "c": {"kind": "conv1d", "out_dim": 5, "pooling": "weighted_mean"}},
        leaves={"y": {"kind": "regressor", "branch": "c", "ensemble_size": 3},
                "k": {"kind": "classifier", "branch": "b", "num_classes": 5},
                "mlm": {"kind": "denoising_lm", "branch": "b", "root": "p"},
                "s": {"kind": "sequence_regressor", "branch": "c", "root": "t"}},
    )
    tree = NeuralTreeModel(cfg).eval()
    tree.fit_target_standardization("y", torch.randn(11) * 3 + 2)
    inputs = tree.dummy_inputs
    g = torch.Generator().manual_seed(2)
    corruption = {"p": CorruptionParams(frac=torch.tensor([0.4, 0.9]),
                                        noise=CorruptionNoise(select=torch.rand(2, 7, generator=g),
                                                              substitute=torch.rand(2, 7, generator=g)))}
    before = tree(inputs, corruption=corruption)
    tree.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer_p", "tokenizer_t"} <= set(os.listdir(tmp_path))
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is NeuralTreeModel
    after = loaded(inputs, corruption=corruption)
    _outputs_equal(before, after)
    assert torch.equal(before.root_outputs["p"].corrupted_ids, after.root_outputs["p"].corrupted_ids)
    toks = loaded.root_tokenizers()
    assert toks["p"]("ACDW")["input_ids"] == [5, 6, 7, 23] and toks["t"].pad_token_id == 0


def test_hf_root_from_tiny_bert_round_trips_without_its_folder(tmp_path):
    bert_dir = _tiny_bert(tmp_path / "bert")
    cfg = NeuralTreeConfig(
        roots={"words": {"kind": "hf", "source": str(bert_dir), "pooling": "none", "hidden_layer": 1}},
        trunk={"kind": "sum", "out_dim": 7},
        branches={"b": {"kind": "mlp", "out_dim": 5}},
        leaves={"y": {"kind": "regressor", "branch": "b"}, "mlm": {"kind": "denoising_lm", "branch": "b", "root": "words"}},
    )
    spec = cfg.root_specs()["words"]
    assert spec.vocab_size == len(WORDS) and spec.mask_token_id == 4 and spec.hidden_size == 8 and spec.max_len == 13
    tree = NeuralTreeModel.from_pretrained_roots(cfg).eval()
    reference = BertModel.from_pretrained(bert_dir).eval()
    for key, value in reference.state_dict().items():
        assert torch.equal(tree.roots["words"].model.state_dict()[key], value), key
    tok = tree.root_tokenizers()["words"]
    enc = tok(["the cat sat on a mat", "a dog ran"], padding=True, return_tensors="pt")
    inputs = {"words": {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}}
    out = tree(inputs)
    # hidden_layer=1 is the first encoder layer's output of the backbone itself
    ref = reference(**enc, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(out.root_outputs["words"].features, ref)
    assert out.leaf_outputs["mlm"].logits.shape == (1, 2, enc["input_ids"].shape[1], len(WORDS))
    # corruption on an HF root goes through its input embeddings (mask token embedding)
    masked = tree(inputs, corruption={"words": CorruptionParams(frac=torch.ones(2), kind=kind_weights("mask"))})
    ids = masked.root_outputs["words"].corrupted_ids
    assert (ids[masked.root_outputs["words"].is_corrupted] == 4).all()
    assert (ids[:, 0] == 2).all()  # [CLS] is special: never corrupted

    tree.save_pretrained(tmp_path / "tree")
    shutil.rmtree(bert_dir)  # loading must not need the source
    loaded = AutoModel.from_pretrained(tmp_path / "tree").eval()
    _outputs_equal(out, loaded(inputs))
    assert loaded.root_tokenizers()["words"]("the cat")["input_ids"] == [2, 5, 6, 3]


def test_hf_root_from_packaged_minilm_matches_its_sentence_embedding(minilm_dir):
    minilm = str(minilm_dir)
    cfg = NeuralTreeConfig(
        roots={"text": {"kind": "hf", "source": minilm, "pooling": "mean", "freeze": True}},
        trunk={"kind": "sum", "out_dim": 11},
        branches={"b": {"kind": "mlp", "out_dim": 5}},
        leaves={"route": {"kind": "classifier", "branch": "b", "num_classes": 7}},
    )
    tree = NeuralTreeModel.from_pretrained_roots(cfg)
    tree.train()
    assert not tree.roots["text"].model.training  # frozen backbone stays in eval mode
    assert not any(p.requires_grad for p in tree.roots["text"].model.parameters())
    tok = tree.root_tokenizers()["text"]
    enc = tok(["route this prompt", "integrate x squared from 0 to 1"], padding=True, return_tensors="pt")
    out = tree({"text": {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}})
    direct = AutoModel.from_pretrained(minilm).eval()
    with torch.no_grad():
        h = direct(**enc).last_hidden_state
    m = enc["attention_mask"][..., None].float()
    expected = (h * m).sum(1) / m.sum(1)
    torch.testing.assert_close(out.root_outputs["text"].features[:, 0], expected, atol=1e-5, rtol=1e-5)
    assert out.leaf_outputs["route"].logits.shape == (1, 2, 7)
    out.leaf_outputs["route"].logits.sum().backward()
    assert tree.leaves["route"].heads[0][-1].weight.grad is not None


def test_register_tree_records_hf_roots_as_parents(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEX_HOME", str(tmp_path / "home"))  # the HF root's source is a registry name
    reg = Registry()
    with reg.stage() as staged:
        _tiny_bert(staged)
        reg.register(staged, name="tiny-bert", kind="model", source="custom", family="encoder")
    cfg = NeuralTreeConfig(
        roots={"words": {"kind": "hf", "source": "tiny-bert", "pooling": "cls"},
               "prot": {"kind": "conv1d", "out_dim": 8, "max_len": 13}},
        trunk={"kind": "sum"},
        branches={"b": {"kind": "mlp", "out_dim": 5}},
        leaves={"y": {"kind": "regressor", "branch": "b"}},
    )
    tree = NeuralTreeModel.from_pretrained_roots(cfg).eval()
    entry = register_tree(tree, "tiny-tree", registry=reg, tags=["test"], extra={"val_nll": 1.5})
    assert entry.kind == "tree" and entry.parents == ["tiny-bert"] and entry.extra["val_nll"] == 1.5
    assert entry.extra["roots"] == {"words": "hf", "prot": "conv1d"}
    assert reg.children("tiny-bert") == ["tiny-tree"]
    folder = reg.path("tiny-tree")
    assert (folder / "tokenizer_words" / "tokenizer.json").is_file()
    loaded = AutoModel.from_pretrained(folder).eval()
    inputs = loaded.dummy_inputs
    _outputs_equal(tree(inputs), loaded(inputs))


def test_push_to_hub_through_huggingface_hub(fake_hub, monkeypatch):
    """push_to_hub and from_pretrained over the shared fake Hub (tests/fakehub.py, transport-level)."""
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_test")
    tree = NeuralTreeModel(NeuralTreeConfig()).eval()
    tree.push_to_hub("someone/tiny-tree")
    assert ("POST", "/api/models/someone/tiny-tree/commit/main") in fake_hub.requests
    remote = fake_hub.root / "someone" / "tiny-tree"
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in remote.iterdir()}
    assert (remote / "tokenizer_protein" / "tokenizer.json").is_file()
    pulled = AutoModel.from_pretrained("someone/tiny-tree").eval()  # downloaded through the fake transport
    assert type(pulled) is NeuralTreeModel
    _outputs_equal(tree(tree.dummy_inputs), pulled(tree.dummy_inputs))
    tok = pulled.root_tokenizers()["protein"]  # the pushed copy, fetched from the repo's tokenizer_protein/
    assert "tokenizer_protein" in tok.name_or_path and tok("WY")["input_ids"] == [23, 24]


def test_decoder_roots_pool_last_token_and_keep_tied_weights(tmp_path):
    from transformers import Qwen2Config, Qwen2Model

    from cortex.models.char_lm import CharLMConfig, CharLMForCausalLM

    torch.manual_seed(2)
    Qwen2Model(Qwen2Config(vocab_size=29, hidden_size=8, intermediate_size=11, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, max_position_embeddings=32)).save_pretrained(tmp_path / "qwen")
    CharLMForCausalLM(CharLMConfig(vocab_size=31, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                   max_position_embeddings=16)).save_pretrained(tmp_path / "charlm")
    cfg = NeuralTreeConfig(
        roots={"q": {"kind": "hf", "source": str(tmp_path / "qwen"), "pooling": "last", "corruption": {"kind": "gaussian"}},
               "c": {"kind": "hf", "source": str(tmp_path / "charlm"), "pooling": "mean"}},
        trunk={"kind": "concat", "out_dim": 5},
        branches={"b": {"kind": "mlp", "out_dim": 5}},
        leaves={"y": {"kind": "regressor", "branch": "b"}},
    )
    assert cfg.root_specs()["q"].mask_token_id is None  # no tokenizer: masking would use a zero embedding
    tree = NeuralTreeModel.from_pretrained_roots(cfg).eval()
    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    q = tree.roots["q"]
    out = q(input_ids=ids, attention_mask=mask)
    hidden = Qwen2Model.from_pretrained(tmp_path / "qwen").eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out.features[:, 0], torch.stack([hidden[0, 2], hidden[1, 3]]))  # last real token
    noised = q(input_ids=ids, attention_mask=mask, corruption=CorruptionParams(frac=torch.tensor([0.0, 0.5])))
    assert torch.equal(noised.token_embeddings[0], out.token_embeddings[0])
    assert not torch.equal(noised.token_embeddings[1], out.token_embeddings[1])
    # the char LM's lm_head is tied to its embeddings: saved once, tied again on load
    assert tree.all_tied_weights_keys == {"roots.c.model.lm_head.weight": "roots.c.model.transformer.wte.weight"}
    tree.save_pretrained(tmp_path / "tree")
    loaded = AutoModel.from_pretrained(tmp_path / "tree")
    c = loaded.roots["c"].model
    assert c.lm_head.weight.data_ptr() == c.transformer.wte.weight.data_ptr()
    torch.testing.assert_close(c.lm_head.weight, tree.roots["c"].model.lm_head.weight)
