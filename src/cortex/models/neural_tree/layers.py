"""Building blocks shared by roots and branches: masked conv and attention blocks, pooling.

All blocks take ``x`` ``(B, T, C)`` and a padding mask ``(B, T)`` bool (True = real token) and keep
padded positions at zero, so that convolutions never read padding as signal.

The repeated blocks are transformers' ``GradientCheckpointingLayer``s, so
``tree.gradient_checkpointing_enable()`` checkpoints them exactly as it checkpoints an HF
backbone's decoder layers (recomputed in the backward pass, RNG state preserved for dropout).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from cortex.models.pooling import masked_mean


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed sine/cosine position encodings ``(length, dim)`` (Vaswani et al.), computed on the fly."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    enc = torch.zeros(length, dim, device=device, dtype=torch.float32)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return enc.to(dtype)


class Conv1dResidBlock(GradientCheckpointingLayer):
    """Pre-norm residual block: norm → swish → conv → norm → swish → conv, plus (projected) input.

    ``(B, T, in_dim)`` → ``(B, T, out_dim)``; convolutions use 'same' padding along ``T``.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, dropout: float = 0.0):
        super().__init__()
        self.norm_1 = nn.LayerNorm(in_dim)
        self.conv_1 = nn.Conv1d(in_dim, out_dim, kernel_size, padding="same", bias=False)
        self.norm_2 = nn.LayerNorm(out_dim)
        self.conv_2 = nn.Conv1d(out_dim, out_dim, kernel_size, padding="same", bias=False)
        self.proj = nn.Linear(in_dim, out_dim, bias=False) if in_dim != out_dim else nn.Identity()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[..., None].to(x.dtype)  # (B, T, 1)
        h = self.conv_1(F.silu(self.norm_1(x)).transpose(1, 2)).transpose(1, 2) * m
        h = self.conv_2(F.silu(self.norm_2(h)).transpose(1, 2)).transpose(1, 2) * m
        return (self.proj(x) + self.drop(h)) * m


class TransformerBlock(GradientCheckpointingLayer):
    """Pre-norm bidirectional self-attention block with a key-padding mask, ``(B, T, D)`` → same."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.ln_1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff_dim or 4 * dim), nn.GELU(), nn.Linear(ff_dim or 4 * dim, dim))
        self.dropout = dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(D, dim=-1)
        q, k, v = (t.view(B, T, self.num_heads, D // self.num_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        # an example with no real token would give NaN rows: let its queries see every key instead
        keys = mask | ~mask.any(-1, keepdim=True)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keys[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, D)))
        x = x + self.drop(self.mlp(self.ln_2(x)))
        return x * mask[..., None].to(x.dtype)


def mlp(in_dim: int, out_dim: int, hidden_dim: int, num_layers: int, dropout: float = 0.0) -> nn.Sequential:
    """``num_layers`` hidden layers (Linear → GELU → Dropout) then a Linear to ``out_dim``."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------- pooling
class MeanPooling(nn.Module):
    """Mean over real positions: ``(B, T, D)``, ``(B, T)`` → ``(B, D)``."""

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(x, mask)


class MaxPooling(nn.Module):
    """Feature-wise max over real positions: ``(B, T, D)``, ``(B, T)`` → ``(B, D)``.

    Suits properties set by the best-matching window of a sequence (a motif anywhere in it), which a
    mean dilutes with the length. Rows without a real position pool to zeros.
    """

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        filled = x.masked_fill(~mask[..., None].bool(), float("-inf"))
        pooled = filled.amax(1)
        return torch.where(mask.bool().any(-1, keepdim=True), pooled, torch.zeros_like(pooled))


class WeightedMeanPooling(nn.Module):
    """Mean weighted by a learned positive score per position: ``w = softplus(x·a + b)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = F.softplus(self.score(x)) * mask[..., None].to(x.dtype)  # (B, T, 1)
        return (w * x).sum(1) / w.sum(1).clamp(min=1e-6)


class AttentionPooling(nn.Module):
    """Softmax attention of one learned query over the real positions, with a value map."""

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Linear(dim, 1, bias=False)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keys = mask | ~mask.any(-1, keepdim=True)
        scores = (self.query(x).squeeze(-1) / math.sqrt(x.shape[-1])).masked_fill(~keys, float("-inf"))
        return (scores.softmax(-1)[..., None] * self.value(x)).sum(1)


POOLING: dict[str, type[nn.Module]] = {
    "mean": MeanPooling,
    "max": MaxPooling,
    "weighted_mean": WeightedMeanPooling,
    "attention": AttentionPooling,
}
