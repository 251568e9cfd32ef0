"""Gaussian regression leaves in the natural parameterization, with target standardization.

The head emits two raw numbers per target; ``eta1`` is the first, ``eta2 = -softplus(second)``.
Then ``variance = -1 / (2 eta2)`` floored at ``var_floor`` (``eta2`` is kept ``>= -1 / (2 var_floor)``
to match, so the loss sees the floored distribution too) and ``mean = eta1 * variance``. The
loss is the Gaussian NLL in exponential-family form (:mod:`.losses`). With label smoothing
``alpha > 0`` (per example), the loss is instead ``KL(target || prediction)`` where the target is
the moment average of ``N(0, 1)`` (weight ``alpha``) and ``N(y, nominal_label_var)``; an example
with ``alpha == 0`` gets the plain NLL. All of this happens in standardized target units:
:meth:`GaussianLeaf.fit_standardization` stores the training targets' mean and std as buffers
(saved with the model), and ``loc``/``scale`` are reported back in the targets' own units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cortex.errors import ModelInputError
from cortex.models.neural_tree.layers import mlp
from cortex.models.neural_tree.leaves.base import Leaf
from cortex.models.neural_tree.leaves.losses import moment_average, natural_gaussian_kl, natural_gaussian_nll
from cortex.models.neural_tree.outputs import (
    BranchOutput,
    RegressorLeafOutput,
    RootOutput,
    SequenceRegressorLeafOutput,
    TrunkOutput,
)
from cortex.models.neural_tree.specs import RegressorLeafSpec, SequenceRegressorLeafSpec


class GaussianLeaf(Leaf):
    """Shared maths of :class:`RegressorLeaf` and :class:`SequenceRegressorLeaf`."""

    output_class = RegressorLeafOutput

    def __init__(self, spec: RegressorLeafSpec | SequenceRegressorLeafSpec, in_dim: int):
        super().__init__(spec, in_dim)
        self.out_dim = spec.out_dim
        self.var_floor = float(spec.var_floor)
        self.nominal_label_var = float(spec.nominal_label_var)
        self.heads = nn.ModuleList(
            mlp(in_dim, 2 * spec.out_dim, in_dim, spec.num_layers) for _ in range(spec.ensemble_size)
        )
        self.register_buffer("target_mean", torch.zeros(spec.out_dim))
        self.register_buffer("target_std", torch.ones(spec.out_dim))

    @torch.no_grad()
    def fit_standardization(self, targets: torch.Tensor) -> None:
        """Store mean and std of training ``targets`` ``(N, O)`` (or ``(N,)``/``(N, T, O)``; NaN = missing)."""
        y = torch.as_tensor(targets, dtype=torch.float32).reshape(-1, self.out_dim)
        finite = torch.isfinite(y)
        if not finite.any(0).all():
            raise ModelInputError("fit_standardization got a target column with no finite values; check the training targets.")
        n = finite.sum(0).clamp(min=1)
        mean = torch.where(finite, y, 0.0).sum(0) / n
        var = torch.where(finite, (y - mean).pow(2), 0.0).sum(0) / n
        std = var.sqrt()
        std = torch.where(std > 1e-8, std, torch.ones_like(std))  # a constant target is left unscaled
        self.target_mean.copy_(mean)
        self.target_std.copy_(std)

    def gaussian(self, raw: torch.Tensor):
        """Output dataclass from raw head outputs ``(..., 2 * O)``."""
        eta1, raw2 = raw.chunk(2, dim=-1)
        # variance >= var_floor is eta2 >= -1 / (2 var_floor); flooring eta2 itself (not only the
        # reported variance) keeps the loss, which reads eta2, on the distribution the leaf reports
        eta2 = torch.clamp(-F.softplus(raw2), min=-0.5 / self.var_floor)
        var = -0.5 / eta2
        mean = eta1 * var
        return self.output_class(
            loc=mean * self.target_std + self.target_mean,
            scale=var.sqrt() * self.target_std,
            eta1=eta1,
            eta2=eta2,
        )

    def gaussian_loss(self, output, y: torch.Tensor, observed: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Mean over members and observed entries; ``y``/``observed`` ``(B, ..., O)``, ``alpha`` ``(B,)``."""
        z = torch.where(observed, (y - self.target_mean) / self.target_std, torch.zeros_like(y))
        nll = natural_gaussian_nll(output.eta1, output.eta2, z)  # (E, B, ..., O)
        a = alpha.reshape(alpha.shape[0], *([1] * (z.dim() - 1)))
        m, v = moment_average(a, z, self.nominal_label_var)
        kl = natural_gaussian_kl(m, v, output.eta1, output.eta2)
        per = torch.where(a > 0, kl, nll)
        w = observed.to(per.dtype).expand_as(per)
        return (per * w).sum() / w.sum().clamp(min=1.0)


class RegressorLeaf(GaussianLeaf):
    """Per-example Gaussian regression: outputs ``(E, B, O)`` from the branch's pooled features."""

    def forward(self, branch: BranchOutput, trunk: TrunkOutput) -> RegressorLeafOutput:
        return self.gaussian(self.member_stack(self.heads, branch.pooled))  # (E, B, 2O) -> (E, B, O)

    def loss(
        self, output: RegressorLeafOutput, targets: torch.Tensor | None = None, *,
        root_output: RootOutput | None = None, alpha: torch.Tensor | float | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``targets`` ``(B, O)`` or ``(B,)``; NaN marks a missing target. ``alpha`` ``(B,)`` or float."""
        if targets is None:
            raise ModelInputError("A regressor leaf's loss needs targets of shape (B, out_dim).")
        B = output.eta1.shape[1]
        y = torch.as_tensor(targets, device=output.eta1.device, dtype=output.eta1.dtype)
        if y.numel() != B * self.out_dim:
            raise ModelInputError(f"Regressor targets have shape {tuple(y.shape)}; expected ({B}, {self.out_dim}).")
        y = y.reshape(B, self.out_dim)
        observed = torch.isfinite(y) if mask is None else mask.reshape(B, -1).bool().expand(B, self.out_dim) & torch.isfinite(y)
        return self.gaussian_loss(output, y, observed, self.smoothing(alpha, root_output, B, y.device, y.dtype))


class SequenceRegressorLeaf(GaussianLeaf):
    """Per-position Gaussian regression over its root's positions: outputs ``(E, B, T, O)``."""

    output_class = SequenceRegressorLeafOutput

    def forward(self, branch: BranchOutput, trunk: TrunkOutput) -> SequenceRegressorLeafOutput:
        s, e = self.span(trunk)
        return self.gaussian(self.member_stack(self.heads, branch.features[:, :, s:e]))

    def loss(
        self, output: SequenceRegressorLeafOutput, targets: torch.Tensor | None = None, *,
        root_output: RootOutput | None = None, alpha: torch.Tensor | float | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``targets`` ``(B, T, O)`` or ``(B, T)``; ``mask`` ``(B, T)`` marks labelled positions
        (default: finite targets at real tokens of the root)."""
        if targets is None:
            raise ModelInputError("A sequence regressor leaf's loss needs targets of shape (B, T, out_dim).")
        _, B, T, O = output.eta1.shape
        y = torch.as_tensor(targets, device=output.eta1.device, dtype=output.eta1.dtype)
        if y.numel() != B * T * O:
            raise ModelInputError(f"Sequence regressor targets have shape {tuple(y.shape)}; expected ({B}, {T}, {O}).")
        y = y.reshape(B, T, O)
        observed = torch.isfinite(y)
        if mask is not None:
            observed = observed & mask.reshape(B, T, 1).bool()
        elif root_output is not None:
            observed = observed & root_output.attention_mask[..., None]
        return self.gaussian_loss(output, y, observed, self.smoothing(alpha, root_output, B, y.device, y.dtype))
