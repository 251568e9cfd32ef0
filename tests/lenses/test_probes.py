"""Probes: architecture, raw logits, tensor round trips, and batched training equal to a per-probe step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cortex.errors import ConfigError
from cortex.lenses.batched_training import BatchedLinear, BatchedMLP, make_optimizer
from cortex.lenses.probes import LinearProbe, MLPClassifier, probe_class


def test_mlp_layout_and_closed_form():
    torch.manual_seed(0)
    p = MLPClassifier(11, layer_norm=True).eval()
    assert (p.fc1.in_features, p.fc1.out_features, p.fc2.out_features, p.fc3.out_features) == (11, 128, 64, 1)
    x = torch.randn(5, 11)
    mean, std = torch.randn(11), torch.rand(11) + 0.5
    p.set_normalizer(mean, std)
    z = nn.functional.layer_norm((x - mean) / std, (11,), p.norm.weight, p.norm.bias)
    h = torch.relu(z @ p.fc1.weight.T + p.fc1.bias)
    h = torch.relu(h @ p.fc2.weight.T + p.fc2.bias)
    torch.testing.assert_close(p(x), (h @ p.fc3.weight.T + p.fc3.bias)[:, 0])


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_tensor_round_trip(kind):
    torch.manual_seed(1)
    p = probe_class(kind)(7, layer_norm=True).eval()
    q = probe_class(kind).from_tensors(p.to_tensors(), torch.zeros(7), torch.ones(7))
    x = torch.randn(4, 7)
    torch.testing.assert_close(p(x), q(x))
    with pytest.raises(ConfigError, match="mlp"):
        probe_class("tree")


def test_linear_direction_is_unit():
    p = LinearProbe(5)
    assert abs(float(p.direction.norm()) - 1) < 1e-6


def test_batched_mlp_gradients_equal_independent_per_probe_gradients():
    """The loss of 3 stacked probes gives each probe exactly the gradient it would get alone; AdamW is
    elementwise, so stepping the stack equals stepping each probe."""
    torch.manual_seed(2)
    P, B, d = 3, 5, 7
    m = BatchedMLP(P, d, hidden=8, dropout=0.0, seed=4)
    refs = [MLPClassifier.from_tensors(m.export(i), torch.zeros(d), torch.ones(d)) for i in range(P)]
    x, y = torch.randn(P, B, d), torch.randint(0, 2, (P, B)).float()
    opt = make_optimizer(m.params, lr=1e-2, weight_decay=0.1)
    nn.functional.binary_cross_entropy_with_logits(m.logits(x, train=True), y, reduction="sum").backward()
    for i, ref in enumerate(refs):
        nn.functional.binary_cross_entropy_with_logits(ref(x[i]), y[i], reduction="sum").backward()
        torch.testing.assert_close(m.params["W1"].grad[i].T, ref.fc1.weight.grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(m.params["W3"].grad[i].T, ref.fc3.weight.grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(m.params["b2"].grad[i, 0], ref.fc2.bias.grad, atol=1e-5, rtol=1e-4)
    before = m.params["W2"].detach().clone()
    opt.step()
    assert not torch.equal(before, m.params["W2"])


def test_batched_linear_export_matches_logits():
    m = BatchedLinear(4, 5, layer_norm=True, seed=1)
    x = torch.randn(4, 3, 5)
    z = m.logits(x)
    for i in range(4):
        p = LinearProbe.from_tensors(m.export(i), torch.zeros(5), torch.ones(5))
        torch.testing.assert_close(p(x[i]), z[i].detach())
