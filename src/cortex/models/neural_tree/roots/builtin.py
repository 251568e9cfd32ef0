"""Built-in roots with their own tokenizer (protein or char): Conv1d and Transformer encoders."""

from __future__ import annotations

import functools

import torch
from torch import nn

from cortex.models.neural_tree.layers import Conv1dResidBlock, TransformerBlock, sinusoidal_positions
from cortex.models.neural_tree.roots.base import Root
from cortex.models.neural_tree.specs import Conv1dRootSpec, TransformerRootSpec, _BuiltinRootSpec


@functools.lru_cache(maxsize=16)
def _vocab(tokenizer: str, chars: str | None) -> dict[str, int]:
    from cortex.data.tokenizers import build_char_tokenizer, build_protein_tokenizer

    tok = build_protein_tokenizer() if tokenizer == "protein" else (
        build_char_tokenizer(chars) if chars is not None else build_char_tokenizer()
    )
    return dict(tok.get_vocab())


def builtin_vocab_map(spec: _BuiltinRootSpec) -> dict[str, int]:
    """Token → id of a built-in root's tokenizer."""
    return _vocab(spec.tokenizer, spec.chars)


class Conv1dRoot(Root):
    """Embedding ``(V, embed_dim)`` → (+ sinusoidal positions) → residual Conv1d blocks → ``(B, T, out_dim)``."""

    def __init__(self, spec: Conv1dRootSpec):
        super().__init__(spec, builtin_vocab_map(spec))
        self.embeddings = nn.Embedding(spec.vocab_size, spec.embed_dim, padding_idx=spec.pad_token_id)
        self.pos_encoding = spec.pos_encoding
        dims = [spec.embed_dim] + [spec.hidden_dim] * (spec.num_blocks - 1) + [spec.out_dim]
        self.blocks = nn.ModuleList(
            Conv1dResidBlock(dims[i], dims[i + 1], spec.kernel_size, spec.dropout) for i in range(spec.num_blocks)
        )

    @property
    def token_embedding(self) -> nn.Module:
        return self.embeddings

    def set_token_embedding(self, value: nn.Module) -> None:
        self.embeddings = value

    def encode(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = embeddings
        if self.pos_encoding:
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        x = x * attention_mask[..., None].to(x.dtype)  # (B, T, E)
        for block in self.blocks:
            x = block(x, attention_mask)
        return x, attention_mask


class TransformerRoot(Root):
    """Token + learned position embeddings → pre-norm bidirectional transformer → ``(B, T, hidden_dim)``."""

    def __init__(self, spec: TransformerRootSpec):
        super().__init__(spec, builtin_vocab_map(spec))
        self.embeddings = nn.Embedding(spec.vocab_size, spec.hidden_dim, padding_idx=spec.pad_token_id)
        self.positions = nn.Embedding(spec.max_len, spec.hidden_dim)
        self.drop = nn.Dropout(spec.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(spec.hidden_dim, spec.num_heads, spec.ff_dim, spec.dropout) for _ in range(spec.num_layers)
        )
        self.ln_f = nn.LayerNorm(spec.hidden_dim)

    @property
    def token_embedding(self) -> nn.Module:
        return self.embeddings

    def set_token_embedding(self, value: nn.Module) -> None:
        self.embeddings = value

    def encode(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = embeddings.shape[1]
        x = self.drop(embeddings + self.positions(torch.arange(T, device=embeddings.device))[None])
        for block in self.blocks:
            x = block(x, attention_mask)
        return self.ln_f(x) * attention_mask[..., None].to(x.dtype), attention_mask
