"""Denoising (masked) language-model leaf over its root's vocabulary."""

from __future__ import annotations

import torch
from torch import nn

from cortex.errors import ModelInputError
from cortex.models.neural_tree.layers import mlp
from cortex.models.neural_tree.leaves.base import Leaf
from cortex.models.neural_tree.leaves.losses import smoothed_cross_entropy
from cortex.models.neural_tree.outputs import BranchOutput, DenoisingLMLeafOutput, RootOutput, TrunkOutput
from cortex.models.neural_tree.specs import DenoisingLMLeafSpec


class DenoisingLMLeaf(Leaf):
    """Logits ``(E, B, T, V)`` at each position of ``root``; the config checks ``V`` is the root's vocabulary.

    The loss is the cross-entropy of the root's clean ``input_ids`` at the positions its corruption
    changed (``root_output.is_corrupted``), averaged over those positions and the members; a batch
    with nothing corrupted contributes 0.
    """

    def __init__(self, spec: DenoisingLMLeafSpec, in_dim: int):
        super().__init__(spec, in_dim)
        self.vocab_size = spec.vocab_size
        self.heads = nn.ModuleList(mlp(in_dim, spec.vocab_size, in_dim, spec.num_layers) for _ in range(spec.ensemble_size))

    def forward(self, branch: BranchOutput, trunk: TrunkOutput) -> DenoisingLMLeafOutput:
        s, e = self.span(trunk)
        return DenoisingLMLeafOutput(logits=self.member_stack(self.heads, branch.features[:, :, s:e]))

    def loss(
        self, output: DenoisingLMLeafOutput, targets: torch.Tensor | None = None, *,
        root_output: RootOutput | None = None, alpha: torch.Tensor | float | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``targets`` ``(B, T)`` default ``root_output.input_ids``; ``mask`` ``(B, T)`` default
        ``root_output.is_corrupted``."""
        if targets is None or mask is None:
            if root_output is None or root_output.input_ids is None:
                raise ModelInputError(
                    f"A denoising leaf's loss needs the clean ids and the corrupted positions: pass "
                    f"root_output=outputs.root_outputs[{self.root!r}] from a forward on input_ids, or targets and mask."
                )
            targets = root_output.input_ids if targets is None else targets
            mask = root_output.is_corrupted if mask is None else mask
        E, B, T, _ = output.logits.shape
        y = targets.reshape(B, T).long()
        a = self.smoothing(alpha, root_output, B, y.device, output.logits.dtype)[:, None]  # (B, 1)
        ce = smoothed_cross_entropy(output.logits, y.expand(E, B, T), a)  # (E, B, T)
        w = mask.reshape(B, T).to(ce.dtype).expand_as(ce)
        return (ce * w).sum() / w.sum().clamp(min=1.0)
