"""Steering hooks: hook hygiene, zero-strength identity, closed forms of each intervention, real models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cortex.errors import ConfigError, InputError
from cortex.lenses.capture import ActivationCapture, forward_module
from cortex.lenses.probes import MLPClassifier
from cortex.steering.hooks import (
    Additive,
    Clamp,
    Contrastive,
    ProbeGradient,
    Removal,
    SteeringHooks,
    SteeringSpec,
    schedule_weights,
)
from cortex.steering.vectors import contrast_direction, probe_direction
from tests.steering.conftest import random_linear_probe


class Scale(nn.Module):
    """A real block whose output is a known function of its input: ``(B, T, d) → 2·x + 1``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x + 1


def _hook_count(blocks) -> int:
    return sum(len(b._forward_hooks) for b in blocks)


def test_hooks_removed_after_context_even_on_error(tiny_qwen):
    blocks = tiny_qwen.layers()
    spec = SteeringSpec(Additive(torch.randn(32)), layers=[0, 1], strength=0.3)
    with pytest.raises(RuntimeError, match="boom"):
        with SteeringHooks(blocks, [spec]) as hooks:
            assert _hook_count(blocks) == 2 and len(hooks._handles) == 2
            raise RuntimeError("boom")
    assert _hook_count(blocks) == 0
    # an error while registering (third block refuses) removes the hooks already added
    class Refusing(nn.Module):
        def register_forward_hook(self, *a, **k):
            raise RuntimeError("no hooks here")

    mixed = [Scale(), Scale(), Refusing()]
    with pytest.raises(RuntimeError, match="no hooks"):
        with SteeringHooks(mixed, [SteeringSpec(Additive(torch.ones(4)), layers=[0, 1, 2])]):
            pass
    assert _hook_count(mixed[:2]) == 0


def test_strength_zero_is_bit_identical_during_generate(demo_loaded, tiny_qwen):
    for loaded in (demo_loaded[1], tiny_qwen):
        model, tok = loaded.model, loaded.tokenizer
        ids = tok("def main(args):", return_tensors="pt")["input_ids"]
        d = model.config.hidden_size
        kw = dict(max_new_tokens=7, do_sample=False, use_cache=True, pad_token_id=0, output_scores=True,
                  return_dict_in_generate=True)
        with torch.no_grad():
            plain = model.generate(input_ids=ids, **kw)
            specs = [SteeringSpec(Additive(torch.randn(d)), layers=[0, 1], strength=0.0),
                     SteeringSpec(ProbeGradient(MLPClassifier(d, hidden=6)), layers=[1], strength=[0.0])]
            with SteeringHooks(loaded.layers(), specs):
                steered = model.generate(input_ids=ids, **kw)
        assert torch.equal(plain.sequences, steered.sequences)
        assert all(torch.equal(a, b) for a, b in zip(plain.scores, steered.scores))


def test_additive_closed_form_and_per_row_strength_and_vectors():
    blocks = [Scale()]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, generator=g)
    v = torch.randn(2, 7, generator=g)                       # one vector per prompt
    spec = SteeringSpec(Additive(v), layers=[0], strength=[0.0, 0.5])
    with SteeringHooks(blocks, [spec]):
        out = blocks[0](x)
    h = 2 * x + 1
    assert torch.equal(out[0], h[0])                         # strength 0 row untouched, bit for bit
    u = v[1] / v[1].norm()
    want = h[1] + 0.5 * h[1].norm(dim=-1, keepdim=True) * u
    np.testing.assert_allclose(out[1].numpy(), want.numpy(), atol=1e-6)
    with pytest.raises(InputError, match="2 strengths were given for a batch of 3 rows"):
        with SteeringHooks(blocks, [spec]):
            blocks[0](torch.randn(3, 5, 7))
    per_row_vectors = SteeringSpec(Additive(v), layers=[0], strength=0.5)
    with pytest.raises(InputError, match="the batch has 3 rows"):
        with SteeringHooks(blocks, [per_row_vectors]):
            blocks[0](torch.randn(3, 5, 7))


def test_last_position_only_and_schedule():
    blocks = [Scale(), Scale(), Scale(), Scale()]
    v = torch.eye(5)[2]
    x = torch.randn(1, 4, 5)
    spec = SteeringSpec(Additive(v), layers=[1, 3], strength=0.4, schedule="sqrt_decay", positions="last")
    with SteeringHooks(blocks, [spec]):
        y1 = blocks[1](x)
        y3 = blocks[3](x)
    h = 2 * x + 1
    assert torch.equal(y1[:, :-1], h[:, :-1])
    w1, w3 = math.sqrt(1 - 1 / 4), math.sqrt(1 - 3 / 4)
    np.testing.assert_allclose(y1[0, -1].numpy(), (h[0, -1] + 0.4 * w1 * h[0, -1].norm() * v).numpy(), atol=1e-6)
    np.testing.assert_allclose(y3[0, -1].numpy(), (h[0, -1] + 0.4 * w3 * h[0, -1].norm() * v).numpy(), atol=1e-6)
    assert schedule_weights("linear_decay", [0, 2], 5) == {0: 1.0, 2: pytest.approx(0.6)}
    assert schedule_weights({0: 0.25, 2: 2.0}, [0, 2], 5) == {0: 0.25, 2: 2.0}
    with pytest.raises(ConfigError, match="no weight for layers"):
        schedule_weights({0: 1.0}, [0, 2], 5)
    with pytest.raises(ConfigError, match="schedule"):
        schedule_weights("cosine", [0], 5)


def test_clamp_and_contrast_closed_forms():
    g = torch.Generator().manual_seed(7)
    v, o = torch.randn(11, generator=g), torch.randn(11, generator=g)
    u = v / v.norm()
    h = torch.randn(1, 13, 11, generator=g) * 3
    clamp = Clamp(v, o, low=-0.5, high=0.25)
    out = clamp.steer(h, torch.ones(1, 1, 1))
    coord = ((out - o) @ u)
    assert float(coord.min()) >= -0.5 - 1e-5 and float(coord.max()) <= 0.25 + 1e-5
    inside = (((h - o) @ u) >= -0.5) & (((h - o) @ u) <= 0.25)
    assert torch.allclose(out[inside], h[inside])
    a, b = torch.randn(11, generator=g), torch.randn(11, generator=g)
    out = Contrastive(a, b).steer(h, torch.full((1, 1, 1), 0.3))
    want = h + 0.3 * h.norm(dim=-1, keepdim=True) * contrast_direction(a, b)
    np.testing.assert_allclose(out.numpy(), want.numpy(), atol=1e-5)
    assert bool(((out - h) @ a > 0).all()) and bool(((out - h) @ b < 0).all())
    with pytest.raises(ConfigError, match="low and/or high"):
        Clamp(v, o)


def test_removal_drives_probe_to_its_null_value_on_a_real_qwen(tiny_qwen):
    """Removing a linear probe's direction (origin: its input mean) leaves exactly its bias logit."""
    blocks = tiny_qwen.layers()
    probe = random_linear_probe(32, seed=11)
    removal = Removal.from_vector(probe_direction("c", 1, probe))
    ids = tiny_qwen.tokenizer("steering removes concepts", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        with SteeringHooks(blocks, [SteeringSpec(removal, layers=[1], strength=1.0)]), \
                ActivationCapture(blocks, [1]) as cap:
            forward_module(tiny_qwen.model)(input_ids=ids)
        logits = probe(cap.tokens(1)[0])
        with ActivationCapture(blocks, [1]) as raw:
            forward_module(tiny_qwen.model)(input_ids=ids)
        before = probe(raw.tokens(1)[0])
    bias = float(probe.linear.bias.detach())
    np.testing.assert_allclose(logits.numpy(), np.full(ids.shape[1], bias), atol=1e-4)
    assert float((before - bias).abs().max()) > 0.1                    # it was not at the null value before


def test_gradient_steering_moves_probe_logit_inside_inference_mode(tiny_qwen):
    torch.manual_seed(5)
    probe = MLPClassifier(32, hidden=10, dropout=0.0)
    probe.set_normalizer(torch.zeros(32), torch.ones(32)).eval()
    blocks = tiny_qwen.layers()
    ids = tiny_qwen.tokenizer("gradient", return_tensors="pt")["input_ids"]
    read = {}
    for s in (-0.3, 0.0, 0.3):
        with torch.inference_mode():
            with SteeringHooks(blocks, [SteeringSpec(ProbeGradient(probe), layers=[0], strength=s)]), \
                    ActivationCapture(blocks, [0]) as cap:
                tiny_qwen.model.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
            h = cap.tokens(0)[0].clone()
        with torch.no_grad():
            read[s] = float(probe(h).mean())
    assert read[-0.3] < read[0.0] < read[0.3]
    assert _hook_count(blocks) == 0


def test_bad_specs_are_config_errors():
    with pytest.raises(ConfigError, match="positions"):
        SteeringSpec(Additive(torch.ones(3)), layers=[0], positions="first")
    with pytest.raises(ConfigError, match="Intervention"):
        SteeringSpec("add", layers=[0])
    with pytest.raises(InputError, match="out of range"):
        SteeringHooks([Scale()], [SteeringSpec(Additive(torch.ones(3)), layers=[4])])
    with pytest.raises(InputError, match="zero"):
        Additive(torch.zeros(5))
    block = Scale()
    with pytest.raises(InputError, match="5-wide layer"):
        with SteeringHooks([block], [SteeringSpec(Additive(torch.ones(3)), layers=[0])]):
            block(torch.zeros(1, 2, 5))
    assert _hook_count([block]) == 0


def test_per_prompt_vectors_in_a_generate_batch(tiny_qwen):
    """Two prompts, two vectors, strengths (0, 0.5): row 0 generates exactly as unsteered, row 1 changes."""
    model, tok = tiny_qwen.model, tiny_qwen.tokenizer
    enc = tok(["first prompt", "other prompt"], return_tensors="pt")          # same length: no padding
    g = torch.Generator().manual_seed(9)
    vectors = torch.randn(2, 32, generator=g)
    kw = dict(max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0, output_scores=True,
              return_dict_in_generate=True)
    calls = []
    with torch.no_grad():
        plain = model.generate(**enc, **kw)
        spec = SteeringSpec(Additive(vectors), layers=[0], strength=[0.0, 0.5])
        with SteeringHooks(tiny_qwen.layers(), [spec]):
            handle = tiny_qwen.layers()[0].register_forward_hook(lambda m, i, o: calls.append(o.shape[1]))
            try:
                steered = model.generate(**enc, **kw)
            finally:
                handle.remove()
    assert calls[0] == enc["input_ids"].shape[1] and calls[1:] == [1] * 5     # KV cache: one new token per call
    assert all(torch.equal(a[0], b[0]) for a, b in zip(plain.scores, steered.scores))
    assert not torch.equal(plain.scores[0][1], steered.scores[0][1])
