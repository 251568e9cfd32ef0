"""torch.compile(fullgraph=True) on a tiny tree with built-in roots and corruption."""

from __future__ import annotations

import pytest
import torch

import cortex  # noqa: F401
from cortex.corruption import CorruptionNoise, CorruptionParams
from cortex.models.neural_tree import NeuralTreeConfig, NeuralTreeModel

B, T = 4, 11


def _tree_and_batch():
    torch.manual_seed(0)
    cfg = NeuralTreeConfig(
        roots={"p": {"kind": "conv1d", "embed_dim": 5, "hidden_dim": 7, "out_dim": 7, "num_blocks": 1,
                     "kernel_size": 3, "max_len": 13, "corruption": {"substitution": "blosum62"}}},
        branches={"b": {"kind": "mlp", "out_dim": 5, "hidden_dim": 5, "pooling": "attention"}},
        leaves={"y": {"kind": "regressor", "branch": "b", "ensemble_size": 2},
                "mlm": {"kind": "denoising_lm", "branch": "b", "root": "p"}},
    )
    tree = NeuralTreeModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 8:] = 0
    inputs = {"p": {"input_ids": torch.randint(5, 25, (B, T), generator=g), "attention_mask": mask}}
    # per-example kinds (mask, substitution, gaussian, mask) in one graph: the kind is data
    kinds = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    noise = CorruptionNoise(select=torch.rand(B, T, generator=g), substitute=torch.rand(B, T, generator=g),
                            gaussian=torch.randn(B, T, 5, generator=g))
    corruption = {"p": CorruptionParams(frac=torch.tensor([0.0, 0.5, 0.7, 1.0]), kind=kinds, noise=noise)}
    return tree, inputs, corruption


def _assert_same(eager, compiled) -> None:
    for name in ("y", "mlm"):
        for field, value in vars(eager.leaf_outputs[name]).items():
            torch.testing.assert_close(getattr(compiled.leaf_outputs[name], field), value, rtol=1e-4, atol=1e-5)
    r_e, r_c = eager.root_outputs["p"], compiled.root_outputs["p"]
    assert torch.equal(r_e.corrupted_ids, r_c.corrupted_ids) and torch.equal(r_e.is_corrupted, r_c.is_corrupted)
    assert r_e.is_corrupted[0].sum() == 0 and r_e.is_corrupted[3].sum() == T  # frac 0 / frac 1


def test_no_graph_breaks_and_fullgraph_trace_equals_eager():
    tree, inputs, corruption = _tree_and_batch()
    explained = torch._dynamo.explain(tree)(inputs, corruption=corruption)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    trunk = tree(inputs).trunk_outputs
    heads = torch._dynamo.explain(tree.call_from_trunk)(trunk.features, ["y", "mlm"], trunk.attention_mask, trunk.root_spans)
    assert heads.graph_break_count == 0, heads.break_reasons
    # dynamo + AOTAutograd with fullgraph=True, without inductor's C++ codegen (minutes on 2 busy cores)
    compiled = torch.compile(tree, fullgraph=True, backend="aot_eager")
    _assert_same(tree(inputs, corruption=corruption), compiled(inputs, corruption=corruption))


@pytest.mark.slow
def test_inductor_compiled_tree_equals_eager():
    tree, inputs, corruption = _tree_and_batch()
    with torch.no_grad():
        eager = tree(inputs, corruption=corruption)
        compiled = torch.compile(tree, fullgraph=True)(inputs, corruption=corruption)
    _assert_same(eager, compiled)
