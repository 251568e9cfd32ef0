"""The built-in char-level causal LM: a pre-norm GPT with learned positions and a KV cache.

Written as a real ``PreTrainedModel`` + ``GenerationMixin``: ``save_pretrained``/``from_pretrained``,
``generate()`` with the transformers ``DynamicCache``, and decoder blocks that return plain tensors
(as transformers 5 decoder layers do), so lenses and steering hooks treat it like any HF causal LM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from cortex.errors import ModelInputError
from cortex.models.char_lm.configuration import CharLMConfig


class CharLMAttention(nn.Module):
    """Multi-head causal self-attention over ``(B, T, C)`` with an optional KV cache."""

    def __init__(self, config: CharLMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, H, T_past + T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class CharLMBlock(nn.Module):
    """Pre-norm transformer block; returns the new residual stream as a plain tensor."""

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

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x), mask, cache))
        return x + self.drop(self.mlp(self.ln_2(x)))


class CharLMPreTrainedModel(PreTrainedModel):
    config_class = CharLMConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["CharLMBlock"]
    _supports_sdpa = True

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

    def __init__(self, config: CharLMConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(CharLMBlock(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> tuple[torch.Tensor, Cache | None, tuple[torch.Tensor, ...] | None]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ModelInputError("Pass exactly one of input_ids or inputs_embeds to the char LM.")
        if input_ids is not None:
            if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
                raise ModelInputError(
                    f"input_ids hold ids outside [0, {self.config.vocab_size}); tokenize with this model's "
                    "own tokenizer (AutoTokenizer.from_pretrained on the model folder)."
                )
            inputs_embeds = self.wte(input_ids)
        B, T, _ = inputs_embeds.shape
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if past + T > self.config.max_position_embeddings:
            raise ModelInputError(
                f"Sequence of {past + T} tokens exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}; shorten the prompt or max_new_tokens."
            )
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=inputs_embeds.device).unsqueeze(0)
        # left-padded batches give negative positions from generate(); padded slots are masked anyway
        x = self.drop(inputs_embeds + self.wpe(position_ids.clamp(min=0)))

        # boolean mask (B, 1, T, past+T): causal, and keys that are padding are hidden
        q_pos = torch.arange(past, past + T, device=x.device)
        k_pos = torch.arange(past + T, device=x.device)
        mask = (k_pos[None, :] <= q_pos[:, None])[None, None]
        if attention_mask is not None:
            if attention_mask.shape[-1] != past + T:
                raise ModelInputError(
                    f"attention_mask covers {attention_mask.shape[-1]} positions but the keys span "
                    f"{past + T}; pass a mask over past and new tokens."
                )
            mask = mask & attention_mask[:, None, None, :].bool()
            # a fully-masked row (a query on left padding) would give NaN: let it see itself
            mask = mask | (k_pos[None, :] == q_pos[:, None])[None, None]

        hidden: list[torch.Tensor] = []
        for block in self.layers:
            if output_hidden_states:
                hidden.append(x)
            x = block(x, mask, past_key_values if use_cache else None)
        x = self.ln_f(x)
        if output_hidden_states:
            hidden.append(x)
        return x, (past_key_values if use_cache else None), (tuple(hidden) if output_hidden_states else None)


class CharLMForCausalLM(CharLMPreTrainedModel, GenerationMixin):
    """Char-level causal LM head over :class:`CharLMModel`, weights tied to the input embeddings."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

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

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits ``(B, T, V)``; with ``labels`` (``-100`` ignored) the next-token cross-entropy."""
        x, cache, hidden = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        logits = self.lm_head(x[:, -logits_to_keep:] if logits_to_keep else x)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache, hidden_states=hidden)
