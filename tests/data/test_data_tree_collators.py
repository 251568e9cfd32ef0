"""Tokenization via datasets.Dataset.map and in DataLoader workers; padding collators."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
from torch.utils.data import DataLoader

import cortex  # noqa: F401
from cortex.data import TokenizingCollator, TreeCollator, build_char_tokenizer, build_protein_tokenizer, get_tokenizer, ids_column, tokenize_dataset
from cortex.errors import DataError
from cortex.models.neural_tree import NeuralTreeConfig, NeuralTreeModel

ROWS = {
    "seq": ["ACDEF", "WY", "MKLVAGT", "", "QQ"],
    "note": ["ab", "abc", "a", "bcab", "cc"],
    "y": [0.5, -1.0, 2.0, float("nan"), 0.25],
    "label": [0, 2, 1, 1, 0],
    "sites": [[0.1, 0.2], [0.3], [0.4, 0.5, 0.6], [], [0.7]],
}


def _tokenizers():
    return {"prot": build_protein_tokenizer(model_max_length=7), "text": build_char_tokenizer("abc", model_max_length=11)}


def test_tokenize_dataset_adds_id_columns_per_root():
    ds = datasets.Dataset.from_dict(ROWS)
    toks = _tokenizers()
    out = tokenize_dataset(ds, toks, {"prot": "seq", "text": "note"}, batch_size=2)
    assert ids_column("prot") in out.column_names and ids_column("text") in out.column_names
    assert out[0][ids_column("prot")] == [5, 6, 7, 8, 9]  # A C D E F
    assert out[3][ids_column("prot")] == []
    assert out[1][ids_column("text")] == [5, 6, 7]
    assert "seq" in out.column_names
    dropped = tokenize_dataset(ds, toks, {"prot": "seq", "text": "note"}, remove_columns=True)
    assert "seq" not in dropped.column_names and "y" in dropped.column_names


def test_tokenize_dataset_rejects_bad_columns_and_long_rows():
    ds = datasets.Dataset.from_dict(ROWS)
    with pytest.raises(DataError, match="'sequence'"):
        tokenize_dataset(ds, {"prot": build_protein_tokenizer()}, {"prot": "sequence"})
    with pytest.raises(DataError, match="longer than 6 tokens"):
        tokenize_dataset(ds, {"prot": build_protein_tokenizer()}, {"prot": "seq"}, max_length=6)
    cut = tokenize_dataset(ds, {"prot": build_protein_tokenizer()}, {"prot": "seq"}, max_length=6, truncation=True)
    assert len(cut[2][ids_column("prot")]) == 6
    with pytest.raises(DataError, match="column_map covers"):
        tokenize_dataset(ds, _tokenizers(), {"prot": "seq"})


def test_tree_collator_pads_and_stacks_targets():
    ds = tokenize_dataset(datasets.Dataset.from_dict(ROWS), _tokenizers(), {"prot": "seq", "text": "note"})
    collate = TreeCollator.from_tokenizers(_tokenizers(), target_columns=["y", "label", "sites"])
    batch = collate([ds[i] for i in range(5)])
    p = batch["inputs"]["prot"]
    assert p["input_ids"].shape == (5, 7) and p["input_ids"].dtype == torch.long
    assert p["attention_mask"].sum(1).tolist() == [5, 2, 7, 0, 2]
    assert (p["input_ids"][p["attention_mask"] == 0] == 0).all()
    assert batch["inputs"]["text"]["input_ids"].shape == (5, 4)
    y = batch["targets"]["y"]
    assert y.dtype == torch.float32 and math.isnan(y[3]) and y[0] == 0.5
    assert batch["targets"]["label"].tolist() == [0, 2, 1, 1, 0] and batch["targets"]["label"].dtype == torch.long
    sites = batch["targets"]["sites"]
    assert sites.shape == (5, 3) and math.isnan(sites[1, 1]) and sites[2, 2].item() == pytest.approx(0.6)
    fixed = TreeCollator.from_tokenizers(_tokenizers(), pad_to=9)([ds[i] for i in range(2)])
    assert fixed["inputs"]["prot"]["input_ids"].shape == (2, 9)
    mult = TreeCollator.from_tokenizers(_tokenizers(), pad_to_multiple_of=4)([ds[i] for i in range(2)])
    assert mult["inputs"]["prot"]["input_ids"].shape == (2, 8)
    with pytest.raises(DataError, match="tokenize the dataset first"):
        collate([{"seq": "AC"}])


def test_tokenizing_collator_runs_in_dataloader_workers_and_feeds_the_tree():
    torch.manual_seed(0)
    tree = NeuralTreeModel(NeuralTreeConfig(
        roots={"prot": {"kind": "conv1d", "max_len": 7, "out_dim": 5, "embed_dim": 5, "hidden_dim": 5},
               "text": {"kind": "transformer", "tokenizer": "char", "chars": "abc", "hidden_dim": 4, "num_heads": 1,
                        "num_layers": 1, "max_len": 11}},
        trunk={"kind": "concat"},
        branches={"b": {"kind": "mlp", "out_dim": 5}},
        leaves={"y": {"kind": "regressor", "branch": "b"}},
    )).eval()
    toks = tree.root_tokenizers()
    collate = TokenizingCollator(toks, {"prot": "seq", "text": "note"}, target_columns=["y"])
    ds = datasets.Dataset.from_dict(ROWS)
    loader = DataLoader(ds, batch_size=3, collate_fn=collate, num_workers=1)
    batches = list(loader)
    assert [b["inputs"]["prot"]["input_ids"].shape[0] for b in batches] == [3, 2]
    pre = TreeCollator.from_tokenizers(toks, target_columns=["y"])(
        list(tokenize_dataset(ds, toks, {"prot": "seq", "text": "note"}).select(range(3))))
    for root in ("prot", "text"):
        for key in ("input_ids", "attention_mask"):
            assert torch.equal(batches[0]["inputs"][root][key], pre["inputs"][root][key])
    out = tree(batches[0]["inputs"])
    loss = tree.leaf_loss("y", out, batches[0]["targets"]["y"])
    assert out.leaf_outputs["y"].loc.shape == (1, 3, 1) and torch.isfinite(loss)


def test_tokenizing_collator_refuses_long_rows_and_non_text():
    collate = TokenizingCollator({"prot": build_protein_tokenizer(model_max_length=4)}, {"prot": "seq"})
    with pytest.raises(DataError, match="longer than 4"):
        collate([{"seq": "ACDEFG"}])
    with pytest.raises(DataError, match="non-text"):
        collate([{"seq": None}])


def test_get_tokenizer_names():
    assert len(get_tokenizer("protein")) == 25
    assert get_tokenizer("char").mask_token_id == 2
