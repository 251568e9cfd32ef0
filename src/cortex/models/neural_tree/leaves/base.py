"""What every leaf shares: its links (branch, root), ensemble heads and label smoothing."""

from __future__ import annotations

import abc

import torch
from torch import nn

from cortex.errors import ModelInputError
from cortex.models.neural_tree.outputs import BranchOutput, RootOutput, TrunkOutput
from cortex.models.neural_tree.specs import LeafSpec


class Leaf(nn.Module, abc.ABC):
    """A task head with ``ensemble_size`` members and its own loss.

    ``forward(branch, trunk)`` → output dataclass with leading ensemble axis ``E``.
    ``loss(output, targets=None, *, root_output=None, alpha=None, mask=None)`` → scalar, averaged
    over members, examples (and positions); each kind documents what it needs.
    """

    def __init__(self, spec: LeafSpec, in_dim: int):
        super().__init__()
        self.kind = spec.kind
        self.branch = spec.branch
        self.root = spec.root
        self.ensemble_size = spec.ensemble_size
        self.label_smoothing = spec.label_smoothing

    def span(self, trunk: TrunkOutput) -> tuple[int, int]:
        """Positions of this leaf's root in the trunk (all positions if it has no root)."""
        if self.root is None:
            return 0, trunk.features.shape[1]
        return trunk.root_spans[self.root]

    def member_stack(self, heads: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        """Apply head ``e`` to ``x[e]`` for each member: ``(E, ...)``."""
        return torch.stack([head(x[e]) for e, head in enumerate(heads)])

    def smoothing(self, alpha: torch.Tensor | float | None, root_output: RootOutput | None, batch: int,
                  device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-example label smoothing ``(B,)``: ``alpha`` if given, else the configured value, where
        ``"corrupt_frac"`` means the root's per-example corruption fraction."""
        if alpha is None:
            if self.label_smoothing == "corrupt_frac":
                if root_output is None:
                    raise ModelInputError(
                        f"Leaf smooths labels by its root's corruption but got no root_output; pass "
                        f"root_output=outputs.root_outputs[{self.root!r}] (tree.leaf_loss does this)."
                    )
                return root_output.corrupt_frac.to(device=device, dtype=dtype)
            alpha = float(self.label_smoothing)
        a = torch.as_tensor(alpha, dtype=dtype, device=device)
        return a.expand(batch) if a.dim() == 0 else a.reshape(batch)

    @abc.abstractmethod
    def forward(self, branch: BranchOutput, trunk: TrunkOutput):
        """The leaf's output dataclass for the first ``ensemble_size`` branch members."""

    @abc.abstractmethod
    def loss(self, output, targets=None, *, root_output=None, alpha=None, mask=None) -> torch.Tensor:
        """Scalar training loss."""
