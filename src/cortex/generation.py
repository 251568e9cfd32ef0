"""Inference helpers shared by the CLI and the library.

Every place cortex produces text with a causal LM (``cortex generate`` and the family adapters'
``stream_generate``, ``cortex lens monitor`` / :func:`cortex.steering.monitor.run_monitor`, steering and
the steering benchmark) goes through :func:`generate_ids`, and every place it reads text one token at a
time through the KV cache goes through :func:`step_logits`. Both follow the transformers 5 contract:
the cache is a transformers ``Cache`` passed as ``cache=``, the attention mask covers past and new
tokens, and batches are padded on the left so every row's last token is the one that continues.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from cortex.errors import InputError


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights int8, activations quantized on the fly; CPU)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks the quantized-tensor API deprecated; it still works on CPU
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def pad_token_id(tokenizer: Any) -> int | None:
    """The id generate() pads finished rows with: the tokenizer's pad token, else its end-of-sequence token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode_prompts(tokenizer: Any, prompts: str | Sequence[str], device: Any = None) -> tuple[Any, Any]:
    """Token ids and attention mask ``(B, T)`` of one prompt or several, padded on the LEFT.

    Left padding keeps every row's last real token in the last column, which is where ``generate()``
    continues from; the mask marks the padding so the model hides it and derives positions from it.
    """
    import torch

    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts:
        raise InputError("No prompt was given; pass at least one prompt to continue.")
    rows = [tokenizer(t)["input_ids"] for t in texts]
    empty = [i for i, r in enumerate(rows) if not r]
    if empty:
        raise InputError(f"Prompt(s) {empty} are empty after tokenization; pass some text to continue.")
    width = max(len(r) for r in rows)
    pad = pad_token_id(tokenizer)
    if pad is None and len({len(r) for r in rows}) > 1:
        raise InputError("The tokenizer has no pad or end-of-sequence token, so prompts of different lengths cannot "
                         "share a batch; generate them one at a time.")
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids, mask


def generate_ids(
    model: nn.Module,
    input_ids: Any,
    attention_mask: Any = None,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    pad_token_id: int | None = None,
    streamer: Any = None,
) -> Any:
    """New token ids ``(B, N)`` continuing ``input_ids (B, T)`` with the model's ``generate()``.

    The one way cortex calls ``generate()``: KV cache on, the mask passed explicitly (left padding for
    batches, see :func:`encode_prompts`), greedy when ``temperature == 0``, otherwise nucleus sampling with
    ``top_p`` and no top-k cut, seeded with ``seed`` when given. Runs under ``torch.no_grad()`` rather than
    inference mode so that gradient-based steering hooks may still enable gradients inside. Rows that end
    early are filled with ``pad_token_id``.
    """
    import torch

    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise InputError(f"input_ids has shape {tuple(input_ids.shape)}; pass a (batch, tokens) tensor with at "
                         "least one token per row.")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise InputError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                         f"{tuple(input_ids.shape)}; pass one mask entry per token.")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens={max_new_tokens} must be at least 1.")
    sample = temperature > 0
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=sample, use_cache=True,
                                  pad_token_id=pad_token_id, streamer=streamer)
    if sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    return out[:, input_ids.shape[1]:]


def step_logits(model: nn.Module, input_ids: Any) -> Iterator[Any]:
    """Read ``input_ids (1, T)`` one token per forward call through the KV cache; yield each step's
    next-token logits ``(V,)`` (float32). Hooks on the model's blocks see every position in turn, as during
    generation, which is what a controller acting per token needs."""
    import torch
    from transformers.cache_utils import DynamicCache

    if input_ids.ndim != 2 or input_ids.shape[0] != 1:
        raise InputError(f"input_ids has shape {tuple(input_ids.shape)}; step_logits reads one row (1, T).")
    cache = DynamicCache(config=getattr(model, "config", None))
    with torch.no_grad():
        for j in range(input_ids.shape[1]):
            out = model(input_ids=input_ids[:, j:j + 1], cache=cache, use_cache=True)
            cache = out.cache
            yield out.logits[0, -1].float()
