"""Masked pooling over the sequence axis, written once for every part of cortex that pools token states
(tree branches and HF roots, lens capture, the steering detector)."""

from __future__ import annotations

import torch

__all__ = ["masked_mean"]


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Mean over real positions: ``hidden (B, T, D)``, ``mask (B, T)`` of 0/1 or bool → ``(B, D)``
    (``(B, 1, D)`` with ``keepdim``). A row without real positions gives zeros, not NaN."""
    m = mask[..., None].to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1, keepdim=keepdim) / m.sum(1, keepdim=keepdim).clamp(min=1.0)
