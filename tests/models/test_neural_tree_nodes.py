"""Shapes of every node kind, ensembles, bad inputs, embeddings in, call_from_trunk."""

from __future__ import annotations

import pytest
import torch

import cortex  # noqa: F401
from cortex.errors import ModelInputError
from cortex.models.neural_tree import (
    BranchOutput,
    ClassifierLeafOutput,
    DenoisingLMLeafOutput,
    NeuralTreeConfig,
    NeuralTreeModel,
    RegressorLeafOutput,
    SequenceRegressorLeafOutput,
)

B, TP, TC = 5, 11, 7  # batch, protein length, char length


def _every_kind_config(trunk: str = "concat") -> NeuralTreeConfig:
    return NeuralTreeConfig(
        roots={
            "prot": {"kind": "conv1d", "embed_dim": 5, "hidden_dim": 7, "out_dim": 13, "num_blocks": 3,
                     "kernel_size": 3, "max_len": 13},
            "text": {"kind": "transformer", "tokenizer": "char", "chars": "abcdefg", "hidden_dim": 4,
                     "num_heads": 2, "num_layers": 1, "max_len": 13},
        },
        trunk={"kind": trunk, "out_dim": 11},
        branches={
            "conv": {"kind": "conv1d", "out_dim": 7, "hidden_dim": 5, "num_layers": 2, "kernel_size": 3, "pooling": "weighted_mean"},
            "mlp": {"kind": "mlp", "out_dim": 5, "hidden_dim": 13, "num_layers": 1, "pooling": "attention"},
            "attn": {"kind": "transformer", "out_dim": 4, "num_heads": 2, "num_layers": 1, "pooling": "mean"},
        },
        leaves={
            "reg": {"kind": "regressor", "branch": "conv", "out_dim": 2, "ensemble_size": 3, "num_layers": 1},
            "cls": {"kind": "classifier", "branch": "mlp", "num_classes": 7},
            "mlm": {"kind": "denoising_lm", "branch": "attn", "root": "prot", "ensemble_size": 2},
            "pos": {"kind": "sequence_regressor", "branch": "conv", "root": "text", "out_dim": 1},
        },
    )


def _inputs(gen: torch.Generator, tp: int = TP, tc: int = TC) -> dict:
    prot = torch.randint(5, 25, (B, tp), generator=gen)
    pmask = torch.ones(B, tp, dtype=torch.long)
    pmask[1, tp - 4:] = 0
    prot[1, tp - 4:] = 0
    text = torch.randint(5, 12, (B, tc), generator=gen)
    return {"prot": {"input_ids": prot, "attention_mask": pmask},
            "text": {"input_ids": text, "attention_mask": torch.ones(B, tc, dtype=torch.long)}}


@pytest.fixture(scope="module")
def tree() -> NeuralTreeModel:
    torch.manual_seed(0)
    return NeuralTreeModel(_every_kind_config()).eval()


def test_shapes_of_every_node(tree):
    out = tree(_inputs(torch.Generator().manual_seed(1)))
    assert out.root_outputs["prot"].features.shape == (B, TP, 13)
    assert out.root_outputs["text"].features.shape == (B, TC, 4)
    assert out.trunk_outputs.features.shape == (B, TP + TC, 11)
    assert out.trunk_outputs.root_spans == {"prot": (0, TP), "text": (TP, TP + TC)}
    conv = out.branch_outputs["conv"]
    assert isinstance(conv, BranchOutput)
    assert conv.features.shape == (3, B, TP + TC, 7) and conv.pooled.shape == (3, B, 7)  # 3 = largest ensemble
    assert out.branch_outputs["mlp"].pooled.shape == (1, B, 5)
    assert out.branch_outputs["attn"].features.shape == (2, B, TP + TC, 4)
    reg = out.leaf_outputs["reg"]
    assert isinstance(reg, RegressorLeafOutput)
    assert reg.loc.shape == reg.scale.shape == reg.eta1.shape == reg.eta2.shape == (3, B, 2)
    assert isinstance(out.leaf_outputs["cls"], ClassifierLeafOutput) and out.leaf_outputs["cls"].logits.shape == (1, B, 7)
    mlm = out.leaf_outputs["mlm"]
    assert isinstance(mlm, DenoisingLMLeafOutput) and mlm.logits.shape == (2, B, TP, 25)
    pos = out.leaf_outputs["pos"]
    assert isinstance(pos, SequenceRegressorLeafOutput) and pos.loc.shape == (1, B, TC, 1)
    # padding stays zero through the conv root
    assert out.root_outputs["prot"].features[1, TP - 4:].abs().max() == 0


def test_leaf_keys_run_only_their_branches(tree):
    out = tree(_inputs(torch.Generator().manual_seed(2)), leaf_keys=["cls"])
    assert list(out.leaf_outputs) == ["cls"] and list(out.branch_outputs) == ["mlp"]
    with pytest.raises(ModelInputError, match="not leaves of this tree"):
        tree(_inputs(torch.Generator().manual_seed(2)), leaf_keys=["nope"])


def test_sum_trunk_broadcasts_equal_lengths_and_rejects_others():
    torch.manual_seed(3)
    tree = NeuralTreeModel(_every_kind_config(trunk="sum")).eval()
    out = tree(_inputs(torch.Generator().manual_seed(3), tp=TC, tc=TC))
    assert out.trunk_outputs.features.shape == (B, TC, 11)
    # sum of projected roots, computed again by hand
    proj = tree.trunk.projections
    expected = proj["prot"](out.root_outputs["prot"].features) + proj["text"](out.root_outputs["text"].features)
    torch.testing.assert_close(out.trunk_outputs.features, expected)
    with pytest.raises(ModelInputError, match="lengths"):
        tree(_inputs(torch.Generator().manual_seed(3)))


def test_ensemble_members_share_roots_and_trunk(tree):
    # roots and trunk exist once: no parameter is duplicated per member
    ptrs = [p.data_ptr() for p in tree.parameters()]
    assert len(ptrs) == len(set(ptrs))
    members = tree.branches["conv"].members
    assert len(members) == 3
    assert members[0].encoder.blocks[0].conv_1.weight.data_ptr() != members[1].encoder.blocks[0].conv_1.weight.data_ptr()
    out = tree(_inputs(torch.Generator().manual_seed(4)), leaf_keys=["reg"])
    trunk = out.trunk_outputs
    for e, member in enumerate(members):  # every member reads the one trunk output
        h, pooled = member(trunk.features, trunk.attention_mask)
        torch.testing.assert_close(out.branch_outputs["conv"].pooled[e], pooled)
    assert not torch.allclose(out.leaf_outputs["reg"].loc[0], out.leaf_outputs["reg"].loc[1])


def test_embeddings_in_match_ids_and_carry_gradients(tree):
    inputs = _inputs(torch.Generator().manual_seed(5))
    ref = tree(inputs, leaf_keys=["reg"]).leaf_outputs["reg"].loc
    emb = tree.embed("prot", inputs["prot"]["input_ids"]).detach().requires_grad_(True)
    fed = dict(inputs, prot={"inputs_embeds": emb, "attention_mask": inputs["prot"]["attention_mask"]})
    out = tree(fed, leaf_keys=["reg"]).leaf_outputs["reg"].loc
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert emb.grad is not None and emb.grad.shape == (B, TP, 5) and emb.grad.abs().sum() > 0


def test_call_from_trunk_reruns_heads(tree):
    out = tree(_inputs(torch.Generator().manual_seed(6)))
    trunk = out.trunk_outputs
    again = tree.call_from_trunk(trunk.features, attention_mask=trunk.attention_mask, root_spans=trunk.root_spans)
    for name in out.leaf_outputs:
        first, second = out.leaf_outputs[name], again.leaf_outputs[name]
        for field in vars(first):
            torch.testing.assert_close(getattr(second, field), getattr(first, field))
    perturbed = trunk.features.clone()
    perturbed[:, 2] += 1.0  # perturb one position
    moved = tree.call_from_trunk(perturbed, ["mlm"], trunk.attention_mask, trunk.root_spans)
    delta = (moved.leaf_outputs["mlm"].logits - out.leaf_outputs["mlm"].logits).abs().amax(dim=(0, 1, 3))
    assert delta[2] > 0 and moved.root_outputs == {}


def test_bad_inputs_are_rejected_before_any_root_runs(tree):
    good = _inputs(torch.Generator().manual_seed(7))
    with pytest.raises(ModelInputError, match=r"missing \['text'\]"):
        tree({"prot": good["prot"]})
    long_ids = torch.full((B, 14), 6)
    with pytest.raises(ModelInputError, match="at most 13"):
        tree(dict(good, prot={"input_ids": long_ids, "attention_mask": torch.ones_like(long_ids)}))
    bad = good["text"]["input_ids"].clone()
    bad[0, 0] = 99
    with pytest.raises(ModelInputError, match="vocabulary of 12"):
        tree(dict(good, text={"input_ids": bad, "attention_mask": good["text"]["attention_mask"]}))
    with pytest.raises(ModelInputError, match="exactly one of input_ids or inputs_embeds"):
        tree(dict(good, prot={"attention_mask": good["prot"]["attention_mask"]}))
    with pytest.raises(ModelInputError, match="different batch sizes"):
        tree(dict(good, text={k: v[:3] for k, v in good["text"].items()}))
    with pytest.raises(ModelInputError, match="unexpected keys"):
        tree(dict(good, text=dict(good["text"], token_type_ids=good["text"]["input_ids"])))


def test_dummy_inputs_run():
    tree = NeuralTreeModel(NeuralTreeConfig()).eval()
    out = tree(tree.dummy_inputs)
    assert out.leaf_outputs["regression"].loc.shape == (1, 2, 1)


def test_max_pooling_takes_the_feature_max_over_real_positions_only():
    from cortex.models.neural_tree.layers import POOLING

    pool = POOLING["max"](3)
    x = torch.tensor([[[1.0, -2.0, 0.5], [3.0, -1.0, 0.0], [9.0, 9.0, 9.0]],
                      [[-4.0, -5.0, -6.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(pool(x, mask), torch.tensor([[3.0, -1.0, 0.5], [-4.0, -5.0, -6.0]]))
    assert torch.equal(pool(x, torch.zeros_like(mask)), torch.zeros(2, 3))  # no real position: zeros, not -inf
    cfg = _every_kind_config()
    cfg.branches["conv"]["pooling"] = "max"
    out = NeuralTreeModel(NeuralTreeConfig.from_dict(cfg.to_dict())).eval()(_inputs(torch.Generator().manual_seed(1)))
    assert torch.isfinite(out.leaf_outputs["reg"].loc).all()
