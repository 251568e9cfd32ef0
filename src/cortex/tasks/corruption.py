"""Reproducible corruption of a batch: every random draw comes from one ``torch.Generator``.

Training draws a fresh generator per step from ``(seed, step, task)``, so a resumed run corrupts
exactly the batches an uninterrupted run would have, and validation uses a fixed generator so its
denoising metrics are comparable between epochs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cortex.corruption import CorruptionNoise, CorruptionParams, kind_weights

# a large odd multiplier spreads (seed, step, salt) over the 64-bit seed space without collisions in practice
_MIX = 0x9E3779B97F4A7C15


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """A CPU generator seeded from ``(seed, step, salt)``; the same triple always gives the same draws."""
    mixed = (int(seed) * _MIX + int(step) * 1_000_003 + int(salt) * 97) % (2**63 - 1)
    return torch.Generator(device="cpu").manual_seed(mixed)


def draw_corruption(
    tree,
    root: str,
    inputs: Mapping[str, torch.Tensor],
    generator: torch.Generator,
    max_frac: float = 1.0,
    kind: str | None = None,
) -> CorruptionParams:
    """Corruption of one root's batch with all randomness drawn from ``generator``.

    Args:
        tree: the :class:`~cortex.models.neural_tree.NeuralTreeModel` (its root's noise schedule,
            default kind and embedding width are used).
        root: root name.
        inputs: that root's ``{"input_ids": (B, T), "attention_mask": (B, T)}``.
        generator: CPU generator for every draw.
        max_frac: fractions from the schedule are scaled by this (``1.0`` = the schedule as is).
        kind: ``mask`` | ``substitution`` | ``gaussian``; ``None`` uses the root's configured kind.

    Returns:
        :class:`~cortex.corruption.CorruptionParams` with ``frac (B,)`` and pre-drawn noise.
    """
    node = tree.roots[root]
    ids = inputs["input_ids"]
    B, T = ids.shape
    device = ids.device
    frac = node.schedule.sample_corrupt_frac(B, generator) * float(max_frac)
    weights = kind_weights(kind) if kind is not None else node.corruption.default_kind.detach().cpu()
    select = torch.rand(B, T, generator=generator)
    substitute = torch.rand(B, T, generator=generator)
    # the Gaussian draw is (B, T, E): only pay for it when the kind actually uses it
    gaussian = torch.randn(B, T, node.embedding_dim, generator=generator) if float(weights[2]) > 0 else None
    noise = CorruptionNoise(
        select=select.to(device), substitute=substitute.to(device),
        gaussian=None if gaussian is None else gaussian.to(device),
    )
    return CorruptionParams(frac=frac.to(device), kind=weights.to(device), noise=noise)
