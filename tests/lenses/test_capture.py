"""Activation capture: output shapes, pooling vs closed forms, hook removal, generate() with a KV cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from cortex.errors import InputError
from cortex.hub.loading import load_model
from cortex.lenses.capture import (
    ActivationCapture,
    encode_texts,
    hidden_from_output,
    last_pool,
    mean_pool,
    prefix_mean,
    replace_hidden,
)


@dataclasses.dataclass
class _Out:
    hidden: torch.Tensor
    extra: int = 3


class _Block(nn.Module):
    """Adds a constant; returns its output as a tensor, a tuple or a dataclass."""

    def __init__(self, c: float, style: str):
        super().__init__()
        self.c, self.style = c, style

    def forward(self, x):
        y = x + self.c
        return {"tensor": y, "tuple": (y, None), "dataclass": _Out(y)}[self.style]


class _Stack(nn.Module):
    def __init__(self, style):
        super().__init__()
        self.layers = nn.ModuleList([_Block(float(i + 1), style) for i in range(3)])

    def forward(self, x):
        for b in self.layers:
            x = hidden_from_output(b(x))
        return x


@pytest.mark.parametrize("style", ["tensor", "tuple", "dataclass"])
def test_capture_reads_every_output_style(style):
    model = _Stack(style)
    x = torch.randn(2, 5, 7)
    with ActivationCapture(model.layers, [0, 2]) as cap:
        model(x)
    torch.testing.assert_close(cap.tokens(0), x + 1)
    torch.testing.assert_close(cap.tokens(2), x + 6)        # 1 + 2 + 3
    assert all(len(b._forward_hooks) == 0 for b in model.layers)


@pytest.mark.parametrize("style", ["tensor", "tuple", "dataclass"])
def test_replace_hidden_keeps_structure(style):
    out = _Block(0.0, style)(torch.zeros(1, 2, 3))
    new = replace_hidden(out, torch.ones(1, 2, 3))
    assert type(new) is type(out)
    torch.testing.assert_close(hidden_from_output(new), torch.ones(1, 2, 3))


def test_hooks_removed_when_the_forward_fails():
    model = _Stack("tensor")
    with pytest.raises(RuntimeError):
        with ActivationCapture(model.layers, [1]):
            model(torch.randn(2, 5, 4)[..., :3] @ torch.randn(4, 4))  # shape error inside the with block
    assert all(len(b._forward_hooks) == 0 for b in model.layers)


def test_bad_layer_index_names_the_range():
    with pytest.raises(InputError, match="0..2"):
        ActivationCapture(_Stack("tensor").layers, [5])


def test_pooling_matches_closed_forms():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 7)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])  # right, none, left padding
    means = torch.stack([h[0, :3].mean(0), h[1].mean(0), h[2, 2:].mean(0)])
    torch.testing.assert_close(mean_pool(h, mask), means)
    torch.testing.assert_close(last_pool(h, mask), torch.stack([h[0, 2], h[1, 4], h[2, 4]]))
    pm = prefix_mean(h, torch.ones(3, 5))
    torch.testing.assert_close(pm[1, 3], h[1, :4].mean(0))


def test_encode_texts_respects_padding(tiny_bert):
    """A text's pooled vector is the same alone and batched with a longer text (padding is masked)."""
    loaded = load_model(tiny_bert)
    texts = ["a short one", "a considerably longer sentence with many more words in it"]
    together = encode_texts(loaded.model, loaded.tokenizer, loaded.layers(), texts, [0, 2], batch_size=2)
    alone = encode_texts(loaded.model, loaded.tokenizer, loaded.layers(), texts[:1], [0, 2], batch_size=1)
    assert together[2].shape == (2, 12)
    torch.testing.assert_close(together[2][0], alone[2][0], atol=1e-5, rtol=1e-4)
    # against the model's own hidden states, mean-pooled by hand
    enc = loaded.tokenizer(texts[1], return_tensors="pt")
    with torch.no_grad():
        hs = loaded.model(**enc, output_hidden_states=True).hidden_states
    torch.testing.assert_close(together[0][1], hs[1][0].mean(0), atol=1e-5, rtol=1e-4)


def test_capture_during_generate_with_kv_cache(tiny_qwen):
    """Per-step captures during generate() equal one full forward pass over the generated sequence."""
    loaded = load_model(tiny_qwen)
    model, tok = loaded.model, loaded.tokenizer
    ids = tok("abcab", return_tensors="pt")["input_ids"]
    with ActivationCapture(loaded.layers(), [1]) as cap:
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                             use_cache=True, pad_token_id=0)
    steps = cap.steps(1)
    assert steps[0].shape[1] == ids.shape[1] and all(s.shape[1] == 1 for s in steps[1:])
    streamed = cap.tokens(1)                                  # prompt + one state per new token but the last
    with ActivationCapture(loaded.layers(), [1]) as full:
        model(out[:, :-1])
    torch.testing.assert_close(streamed, full.tokens(1), atol=1e-5, rtol=1e-4)
