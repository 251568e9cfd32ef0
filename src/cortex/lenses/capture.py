"""Activation capture: forward hooks on a model's blocks, per token or pooled, always removed afterwards.

A block's output may be a plain tensor (transformers 5 decoder and encoder layers, cortex's char LM),
a tuple whose first element is the hidden state (older layers, some remote code), or a dataclass /
``ModelOutput`` whose first tensor field is. :func:`hidden_from_output` reads all three and
:func:`replace_hidden` rebuilds the same structure around a new hidden state (what a steering hook
returns).

During ``generate()`` with a KV cache each forward call sees only the new tokens, so
:class:`ActivationCapture` keeps one tensor per call (``steps``) and joins them along the sequence axis
on request (``tokens``): the prompt's states followed by one state per generated token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cortex.errors import ConfigError, InputError
from cortex.models.pooling import masked_mean

POOLS = ("mean", "last", "tokens")


def hidden_from_output(output: Any) -> torch.Tensor:
    """The hidden state ``(B, T, d)`` inside a block's output (tensor, tuple, or dataclass/ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if dataclasses.is_dataclass(output):
        for f in dataclasses.fields(output):
            value = getattr(output, f.name, None)
            if isinstance(value, torch.Tensor):
                return value
    raise InputError(
        f"Cannot find a hidden-state tensor in a layer output of type {type(output).__name__}. Hook a block "
        "whose output is a tensor, a tuple starting with one, or a dataclass holding one."
    )


def replace_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """``output`` with its hidden state swapped for ``hidden``, keeping its structure (for steering hooks)."""
    if isinstance(output, torch.Tensor):
        return hidden
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (hidden, *output[1:])
    if isinstance(output, list) and output and isinstance(output[0], torch.Tensor):
        return [hidden, *output[1:]]
    if dataclasses.is_dataclass(output):
        for f in dataclasses.fields(output):
            if isinstance(getattr(output, f.name, None), torch.Tensor):
                return dataclasses.replace(output, **{f.name: hidden})
    raise InputError(
        f"Cannot replace the hidden state of a layer output of type {type(output).__name__}; it holds no tensor."
    )


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: ``hidden (B, T, d)``, ``mask (B, T)`` of 0/1 → ``(B, d)``."""
    return masked_mean(hidden, mask)


def last_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last real token of each row, for left or right padding: ``(B, T, d)``, ``(B, T)`` → ``(B, d)``."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).amax(1).clamp_min(0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def prefix_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Running mean of real tokens up to each position: ``(B, T, d)`` → ``(B, T, d)``.

    What a sentence-level probe sees at token ``t`` when it reads a text as it streams in.
    """
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).cumsum(1) / m.cumsum(1).clamp_min(1.0)


_POOLERS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mean": mean_pool,
    "last": last_pool,
}


def check_pool(pool: str) -> str:
    if pool not in POOLS:
        raise ConfigError.bad_choice("pool", pool, POOLS)
    return pool


class _StopForward(Exception):
    """Raised by the deepest hook when nothing after it is needed, to skip the remaining blocks."""


class LayerHooks:
    """Forward hooks on ``blocks[i]`` for each of :meth:`_hooked_layers`, as a context manager.

    Subclasses set ``self.blocks`` and ``self._handles = []`` and define ``_hook(layer)`` (the hook
    function) and ``_hooked_layers()``. Entering registers every hook; an error while registering
    removes the ones already added; leaving (even on error) removes them all.
    """

    blocks: Sequence[nn.Module]
    _handles: list[Any]

    def _hooked_layers(self) -> Sequence[int]:
        raise TypeError(f"{type(self).__name__} must define _hooked_layers()")

    def _hook(self, layer: int) -> Callable[..., Any]:
        raise TypeError(f"{type(self).__name__} must define _hook(layer)")

    def __enter__(self):
        try:
            for layer in self._hooked_layers():
                self._handles.append(self.blocks[layer].register_forward_hook(self._hook(layer)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        """Detach every hook this object added (idempotent)."""
        while self._handles:
            self._handles.pop().remove()


class ActivationCapture(LayerHooks):
    """Record the outputs of chosen blocks while the model runs; hooks are removed on exit, always.

    >>> with ActivationCapture(loaded.layers(), [1, 3]) as cap:
    ...     model(**batch)                       # or model.generate(...): one entry per forward call
    >>> cap.tokens(3)                            # (B, T_total, d): prompt then each generated token

    ``on_output(layer, hidden)`` (optional) is called with each captured ``(B, T, d)`` hidden state as
    it is produced, e.g. to score lenses token by token during generation. ``store=False`` keeps nothing
    (only the callback runs). ``stop_after_last`` aborts the forward pass after the deepest requested
    block (used by :func:`encode_texts`, which needs nothing above it); the caller catches it through
    :meth:`run`.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        layers: Iterable[int],
        *,
        detach: bool = True,
        store: bool = True,
        on_output: Callable[[int, torch.Tensor], None] | None = None,
        stop_after_last: bool = False,
    ):
        self.blocks = list(blocks)
        self.layers = sorted(set(int(i) for i in layers))
        if not self.layers:
            raise InputError("No layers to capture. Pass at least one layer index, e.g. layers=[0].")
        n = len(self.blocks)
        bad = [i for i in self.layers if not -n <= i < n]
        if bad:
            raise InputError(
                f"Layer indices {bad} are out of range for a model with {n} blocks; use 0..{n - 1} "
                "(or negative indices counted from the end)."
            )
        self.layers = sorted(set(i % n for i in self.layers))
        self.detach = detach
        self.store = store
        self.on_output = on_output
        self.stop_after_last = stop_after_last
        self.steps_by_layer: dict[int, list[torch.Tensor]] = {i: [] for i in self.layers}
        self._handles: list[Any] = []

    def _hook(self, layer: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            hidden = hidden_from_output(output)
            if self.detach:
                hidden = hidden.detach()
            if self.store:
                self.steps_by_layer[layer].append(hidden)
            if self.on_output is not None:
                self.on_output(layer, hidden)
            if self.stop_after_last and layer == self.layers[-1]:
                raise _StopForward()

        return hook

    def _hooked_layers(self) -> Sequence[int]:
        return self.layers

    def run(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` (a forward pass); returns its result, or ``None`` if the pass was stopped early."""
        try:
            return fn()
        except _StopForward:
            return None

    def clear(self) -> None:
        """Forget captured states (hooks stay attached)."""
        for v in self.steps_by_layer.values():
            v.clear()

    def steps(self, layer: int) -> list[torch.Tensor]:
        """One ``(B, T_call, d)`` tensor per forward call at ``layer``."""
        return self.steps_by_layer[self._index(layer)]

    def tokens(self, layer: int) -> torch.Tensor:
        """All captured positions at ``layer`` joined along the sequence: ``(B, T_total, d)``."""
        steps = self.steps(layer)
        if not steps:
            raise InputError(f"Nothing was captured at layer {layer}; run the model inside the `with` block.")
        return torch.cat(steps, dim=1)

    def _index(self, layer: int) -> int:
        i = layer % len(self.blocks)
        if i not in self.steps_by_layer:
            raise InputError(f"Layer {layer} was not captured; captured layers are {self.layers}.")
        return i


def forward_module(model: nn.Module) -> nn.Module:
    """The module to run for hidden states: the base model of a ``*ForCausalLM`` (skips the LM head)."""
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) else model


def ensure_pad_token(tokenizer: Any) -> None:
    """Causal-LM tokenizers often lack a pad token; batching needs one (EOS is used, masked out anyway)."""
    if getattr(tokenizer, "pad_token_id", None) is None:
        if getattr(tokenizer, "eos_token", None) is None:
            raise InputError(
                "The tokenizer has neither a pad nor an EOS token, so texts cannot be batched. Set "
                "tokenizer.pad_token before capturing."
            )
        tokenizer.pad_token = tokenizer.eos_token


@torch.inference_mode()
def encode_texts(
    model: nn.Module,
    tokenizer: Any,
    blocks: Sequence[nn.Module],
    texts: Sequence[str],
    layers: Iterable[int],
    *,
    pool: str = "mean",
    batch_size: int = 64,
    max_length: int = 128,
    progress: Callable[[int], None] | None = None,
) -> dict[int, torch.Tensor]:
    """Pooled activations of ``texts`` at ``layers``: ``{layer: (len(texts), d)}`` float32 on CPU.

    Texts are sorted by length so batches carry little padding; pooling respects the attention mask;
    blocks above the deepest requested layer are never run. ``progress(n)`` is told how many texts
    each batch finished.
    """
    check_pool(pool)
    if pool == "tokens":
        raise InputError("encode_texts pools each text to one vector; use pool='mean' or 'last' "
                         "(per-token states come from ActivationCapture.tokens).")
    if not texts:
        raise InputError("No texts to encode; pass at least one string.")
    ensure_pad_token(tokenizer)
    pooler = _POOLERS[pool]
    runner = forward_module(model)
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    layer_list = sorted(set(int(i) % len(blocks) for i in layers))
    chunks: dict[int, list[torch.Tensor]] = {i: [] for i in layer_list}
    with ActivationCapture(blocks, layer_list, stop_after_last=True) as cap:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            ids = enc["input_ids"].to(device)
            mask = enc["attention_mask"].to(device)
            cap.clear()
            cap.run(lambda: runner(input_ids=ids, attention_mask=mask))
            for i in layer_list:
                chunks[i].append(pooler(cap.tokens(i).float(), mask).cpu())
            if progress is not None:
                progress(len(idx))
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {i: torch.cat(chunks[i])[inverse] for i in layer_list}


@torch.inference_mode()
def token_states(
    model: nn.Module,
    tokenizer: Any,
    blocks: Sequence[nn.Module],
    text: str,
    layers: Iterable[int],
    *,
    max_length: int = 512,
) -> tuple[list[str], Mapping[int, torch.Tensor]]:
    """Per-token hidden states of one text: ``(tokens, {layer: (T, d)})`` float32 on CPU."""
    if not text.strip():
        raise InputError("The text is empty; pass a sentence to read.")
    enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    device = next(model.parameters()).device
    ids = enc["input_ids"].to(device)
    layer_list = sorted(set(int(i) % len(blocks) for i in layers))
    with ActivationCapture(blocks, layer_list, stop_after_last=True) as cap:
        cap.run(lambda: forward_module(model)(input_ids=ids, attention_mask=torch.ones_like(ids)))
        states = {i: cap.tokens(i)[0].float().cpu() for i in layer_list}
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    return pieces, states
