"""The built-in char-level causal LM: a pre-norm GPT with learned positions and a KV cache.

Written to the transformers contract of the installed version (5.x), the way ``modeling_qwen2`` is:

- the KV cache is a transformers :class:`~transformers.cache_utils.Cache` taken as ``cache=`` (what
  ``generate()`` passes) or under its older name ``past_key_values=``, and returned as ``output.cache``;
- ``attention_mask`` (2D, over past and new tokens, left padding allowed) and ``position_ids`` are honoured:
  without ``position_ids`` the positions are derived from the mask as ``generate()`` does, so a left-padded
  batch gives each row the positions it would have alone;
- the mask is built by transformers' ``create_causal_mask`` and attention runs through the function that
  ``config._attn_implementation`` names (``"sdpa"`` or ``"eager"``; anything else is refused);
- ``output_attentions`` needs eager attention (SDPA computes no weights) and is refused otherwise;
- blocks are ``GradientCheckpointingLayer`` s, so ``gradient_checkpointing_enable()`` works;
- a keyword the model does not understand raises :class:`~cortex.errors.ModelInputError` naming it.

Decoder blocks return plain tensors (as transformers 5 decoder layers do), so lens and steering hooks
treat this model like any HF causal LM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple

from cortex.errors import ModelInputError
from cortex.models.char_lm.configuration import CharLMConfig

#: attention implementations the char LM runs (``attn_implementation=`` / ``set_attn_implementation``)
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention; ``query (B, H, T, D)``, keys/values ``(B, H, S, D)``.

    ``attention_mask`` is the additive ``(B, 1, T, S)`` mask of transformers' ``eager_mask`` (0 = attend,
    dtype minimum = hidden). Returns the output ``(B, T, H, D)`` and the weights ``(B, H, T, S)``.
    """
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class CharLMAttention(nn.Module):
    """Multi-head causal self-attention over ``(B, T, C)``; the implementation comes from the config."""

    def __init__(self, config: CharLMConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.n_head = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim ** -0.5
        self.is_causal = True
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.dropout

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, cache: Cache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x (B, T, C)`` -> ``(output (B, T, C), weights (B, H, T, S) or None)``; appends to ``cache``."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, H, S = past + T, D)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        y, weights = attention(
            self, q, k, v, attention_mask, dropout=self.dropout if self.training else 0.0, scaling=self.scaling
        )
        return self.proj(y.reshape(B, T, C)), weights


class CharLMBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block; returns the new residual stream as a plain tensor.

    ``attentions``, when given, receives this block's attention weights (eager attention only).
    """

    def __init__(self, config: CharLMConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = CharLMAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            nn.GELU(),
            nn.Linear(config.intermediate_size, config.hidden_size),
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        attentions: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        a, weights = self.attn(self.ln_1(hidden_states), attention_mask, cache)
        if attentions is not None:
            attentions.append(weights)
        x = hidden_states + self.drop(a)
        return x + self.drop(self.mlp(self.ln_2(x)))


def _merge_cache_names(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache under transformers 5's name (``cache``) or its older one (``past_key_values``), not both."""
    if cache is not None and past_key_values is not None:
        raise ModelInputError("Pass the KV cache once: as cache=... (transformers 5) or past_key_values=..., not both.")
    cache = cache if cache is not None else past_key_values
    if cache is not None and not isinstance(cache, Cache):
        raise ModelInputError(
            f"cache is a {type(cache).__name__}; pass a transformers Cache (e.g. DynamicCache()), as generate() does. "
            "Tuples of past keys and values are not accepted."
        )
    return cache


def _refuse_unknown(kwargs: dict[str, Any], where: str, accepted: tuple[str, ...]) -> None:
    """Raise for keywords the model would otherwise silently ignore."""
    unknown = sorted(kwargs)
    if unknown:
        raise ModelInputError(
            f"{where}.forward got keyword argument(s) it does not use: {', '.join(unknown)}. "
            f"It accepts: {', '.join(accepted)}."
        )


class CharLMPreTrainedModel(PreTrainedModel):
    config_class = CharLMConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["CharLMBlock"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True

    def _check_and_adjust_attn_implementation(
        self, attn_implementation: str | None, is_init_check: bool = False, allow_all_kernels: bool = False
    ) -> str:
        # the char LM has its own eager path and runs SDPA through transformers; flash/flex/kernels are not wired
        if attn_implementation is not None and attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ModelInputError(
                f"attn_implementation={attn_implementation!r} is not supported by the cortex char LM; "
                f"use one of {', '.join(repr(a) for a in ATTN_IMPLEMENTATIONS)} (default 'sdpa')."
            )
        return super()._check_and_adjust_attn_implementation(attn_implementation, is_init_check, allow_all_kernels)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class CharLMModel(CharLMPreTrainedModel):
    """Embeddings, blocks and the final norm; returns hidden states ``(B, T, C)``."""

    _accepted = ("input_ids", "attention_mask", "position_ids", "cache", "past_key_values", "inputs_embeds",
                 "use_cache", "output_attentions", "output_hidden_states")

    def __init__(self, config: CharLMConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(CharLMBlock(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def _embed(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ModelInputError("Pass exactly one of input_ids or inputs_embeds to the char LM.")
        if input_ids is None:
            return inputs_embeds
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ModelInputError(
                f"input_ids hold ids outside [0, {self.config.vocab_size}); tokenize with this model's "
                "own tokenizer (AutoTokenizer.from_pretrained on the model folder)."
            )
        return self.wte(input_ids)

    def _positions(
        self, position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, past: int, T: int,
        device: torch.device,
    ) -> torch.Tensor:
        """``(B or 1, T)`` positions: given, else from the mask (as ``generate()`` derives them), else counted."""
        if position_ids is None and attention_mask is not None:
            # a left-padded row starts at position 0 on its first real token; padding sits at 0 and is masked
            pos = attention_mask.long().cumsum(-1) - 1
            position_ids = pos.masked_fill(attention_mask == 0, 0)[:, -T:]
        elif position_ids is None:
            position_ids = torch.arange(past, past + T, device=device).unsqueeze(0)
        if position_ids.numel() and (position_ids.min() < 0 or position_ids.max() >= self.config.max_position_embeddings):
            raise ModelInputError(
                f"position_ids span [{int(position_ids.min())}, {int(position_ids.max())}] but the char LM learned "
                f"positions 0..{self.config.max_position_embeddings - 1}; shorten the prompt or max_new_tokens."
            )
        return position_ids

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """Hidden states ``(B, T, C)`` of ``input_ids (B, T)`` (or ``inputs_embeds (B, T, C)``).

        ``attention_mask (B, past + T)``: 1 for real tokens, 0 for (left) padding. ``cache``: a transformers
        ``Cache`` holding ``past`` tokens; it is updated in place and returned when ``use_cache``.
        """
        _refuse_unknown(kwargs, type(self).__name__, self._accepted)
        cache = _merge_cache_names(cache, past_key_values)
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        if output_attentions and self.config._attn_implementation != "eager":
            raise ModelInputError(
                f"output_attentions=True needs eager attention, but this model runs "
                f"{self.config._attn_implementation!r} (which computes no weights); load it with "
                "attn_implementation='eager' or call model.set_attn_implementation('eager')."
            )
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if use_cache is None:
            use_cache = cache is not None or (self.config.use_cache and not checkpointing)
        if cache is not None and not use_cache:
            raise ModelInputError("A cache was passed with use_cache=False; drop the cache or set use_cache=True.")

        x = self._embed(input_ids, inputs_embeds)
        B, T, _ = x.shape
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        if attention_mask is not None and tuple(attention_mask.shape) != (B, past + T):
            raise ModelInputError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the batch has {B} rows and "
                f"{past} cached + {T} new tokens; pass a 2D mask (B, past + T) over past and new tokens."
            )
        position_ids = self._positions(position_ids, attention_mask, past, T, x.device)
        x = self.drop(x + self.wpe(position_ids))
        mask = create_causal_mask(
            config=self.config, inputs_embeds=x, attention_mask=attention_mask, cache=cache, position_ids=position_ids
        )

        hidden: list[torch.Tensor] = []
        attentions: list[torch.Tensor] | None = [] if output_attentions else None
        for block in self.layers:
            if output_hidden_states:
                hidden.append(x)
            x = block(x, mask, cache=cache, attentions=attentions)
        x = self.ln_f(x)
        if output_hidden_states:
            hidden.append(x)
        return BaseModelOutputWithPast(
            last_hidden_state=x, cache=cache if use_cache else None,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class CharLMForCausalLM(CharLMPreTrainedModel, GenerationMixin):
    """Char-level causal LM head over :class:`CharLMModel`, weights tied to the input embeddings."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    _accepted = CharLMModel._accepted + ("labels", "logits_to_keep", "return_dict", "num_items_in_batch")

    def __init__(self, config: CharLMConfig):
        super().__init__(config)
        self.transformer = CharLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values: Cache | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits ``(B, T, V)`` (the last ``logits_to_keep`` positions when it is > 0); with ``labels``
        (``-100`` ignored) the next-token cross-entropy, summed over ``num_items_in_batch`` when the HF
        Trainer passes it. See :meth:`CharLMModel.forward` for the other inputs."""
        _refuse_unknown(kwargs, type(self).__name__, self._accepted)
        out = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        x = out.last_hidden_state
        logits = self.lm_head(x[:, -logits_to_keep:] if logits_to_keep else x)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, num_items_in_batch=num_items_in_batch
            )
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states, attentions=out.attentions
        )
