"""Branches: per task family, a per-position encoder and a pooling (registry :data:`BRANCHES`).

An :class:`EnsembleBranch` holds ``E`` independent copies of one branch; they all read the same
trunk output (roots and trunk are computed once and shared by every member).
"""

from __future__ import annotations

import torch
from torch import nn

from cortex.models.neural_tree.layers import POOLING, Conv1dResidBlock, TransformerBlock, mlp
from cortex.models.neural_tree.outputs import BranchOutput, TrunkOutput
from cortex.models.neural_tree.specs import BranchSpec


class Conv1dBranch(nn.Module):
    """Residual Conv1d blocks ``in_dim → hidden_dim → ... → out_dim``."""

    def __init__(self, spec: BranchSpec, in_dim: int):
        super().__init__()
        dims = [in_dim] + [spec.hidden_dim] * (spec.num_layers - 1) + [spec.out_dim]
        self.blocks = nn.ModuleList(
            Conv1dResidBlock(dims[i], dims[i + 1], spec.kernel_size, spec.dropout) for i in range(spec.num_layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return x


class MLPBranch(nn.Module):
    """The same MLP at every position (``num_layers`` hidden layers)."""

    def __init__(self, spec: BranchSpec, in_dim: int):
        super().__init__()
        self.net = mlp(in_dim, spec.out_dim, spec.hidden_dim, spec.num_layers, spec.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(x) * mask[..., None].to(x.dtype)


class TransformerBranch(nn.Module):
    """Linear map to ``out_dim`` (if needed) then bidirectional transformer blocks."""

    def __init__(self, spec: BranchSpec, in_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, spec.out_dim) if in_dim != spec.out_dim else nn.Identity()
        self.blocks = nn.ModuleList(
            TransformerBlock(spec.out_dim, spec.num_heads, None, spec.dropout) for _ in range(spec.num_layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for block in self.blocks:
            x = block(x, mask)
        return x


BRANCHES: dict[str, type[nn.Module]] = {"conv1d": Conv1dBranch, "mlp": MLPBranch, "transformer": TransformerBranch}


class BranchMember(nn.Module):
    """One ensemble member: encoder + pooling."""

    def __init__(self, spec: BranchSpec, in_dim: int):
        super().__init__()
        self.encoder = BRANCHES[spec.kind](spec, in_dim)
        self.pooling = POOLING[spec.pooling](spec.out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x, mask)  # (B, T, D_b)
        return h, self.pooling(h, mask)


class EnsembleBranch(nn.Module):
    """``E`` members of one branch; output features ``(E, B, T, D_b)`` and pooled ``(E, B, D_b)``."""

    def __init__(self, spec: BranchSpec, in_dim: int, ensemble_size: int):
        super().__init__()
        self.out_dim = spec.out_dim
        self.members = nn.ModuleList(BranchMember(spec, in_dim) for _ in range(ensemble_size))

    def forward(self, trunk: TrunkOutput) -> BranchOutput:
        feats, pooled = [], []
        for member in self.members:
            h, p = member(trunk.features, trunk.attention_mask)
            feats.append(h)
            pooled.append(p)
        return BranchOutput(features=torch.stack(feats), attention_mask=trunk.attention_mask, pooled=torch.stack(pooled))
