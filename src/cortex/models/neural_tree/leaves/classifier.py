"""Classification leaf: logits per example, cross-entropy with per-example label smoothing."""

from __future__ import annotations

import torch
from torch import nn

from cortex.errors import ModelInputError
from cortex.models.neural_tree.layers import mlp
from cortex.models.neural_tree.leaves.base import Leaf
from cortex.models.neural_tree.leaves.losses import smoothed_cross_entropy
from cortex.models.neural_tree.outputs import BranchOutput, ClassifierLeafOutput, RootOutput, TrunkOutput
from cortex.models.neural_tree.specs import ClassifierLeafSpec


class ClassifierLeaf(Leaf):
    """``num_classes`` logits ``(E, B, C)`` from the branch's pooled features."""

    def __init__(self, spec: ClassifierLeafSpec, in_dim: int):
        super().__init__(spec, in_dim)
        self.num_classes = spec.num_classes
        self.heads = nn.ModuleList(mlp(in_dim, spec.num_classes, in_dim, spec.num_layers) for _ in range(spec.ensemble_size))

    def forward(self, branch: BranchOutput, trunk: TrunkOutput) -> ClassifierLeafOutput:
        return ClassifierLeafOutput(logits=self.member_stack(self.heads, branch.pooled))

    def loss(
        self, output: ClassifierLeafOutput, targets: torch.Tensor | None = None, *,
        root_output: RootOutput | None = None, alpha: torch.Tensor | float | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``targets`` ``(B,)`` class ids (negative = ignore); smoothing ``alpha`` ``(B,)`` or float."""
        if targets is None:
            raise ModelInputError("A classifier leaf's loss needs targets: class ids of shape (B,).")
        B = output.logits.shape[1]
        y = torch.as_tensor(targets, device=output.logits.device).long().reshape(-1)
        if y.numel() != B:
            raise ModelInputError(f"Classifier targets have {y.numel()} entries for a batch of {B}.")
        if not torch.compiler.is_compiling() and int(y.max()) >= self.num_classes:
            raise ModelInputError(
                f"Classifier targets hold class {int(y.max())} but the leaf has num_classes={self.num_classes}."
            )
        keep = y >= 0 if mask is None else (y >= 0) & mask.reshape(B).bool()
        a = self.smoothing(alpha, root_output, B, y.device, output.logits.dtype)
        ce = smoothed_cross_entropy(output.logits, y.expand(output.logits.shape[0], B), a)  # (E, B)
        w = keep.to(ce.dtype).expand_as(ce)
        return (ce * w).sum() / w.sum().clamp(min=1.0)
