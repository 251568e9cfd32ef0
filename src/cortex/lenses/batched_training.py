"""Train many small probes at once: parameters stacked along a probe axis, one batched matmul per layer.

Probe ``p`` sees its own minibatch ``x[p] (B, d)``; an MLP step is three ``bmm`` calls over all probes,
so a thousand concepts times six layers train about as fast as one large matrix product. Dropout,
BCE-with-logits and AdamW are per probe (see :func:`make_optimizer`); :meth:`keep` drops probes (and their optimizer state) that are
done, so later rounds cost only what is still training. :meth:`export` returns one probe's tensors in the
layout of :meth:`cortex.lenses.probes.Probe.to_tensors`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch.nn import functional as F


class BatchedProbes:
    """``P`` probes of one kind trained together; ``logits(x (P, B, d)) → (P, B)``.

    With ``layer_norm`` the input is layer-normalized; the LayerNorm's affine stays at identity while
    training because it is redundant with the first linear layer (``W (x̂·g + β) = (W·diag g) x̂ + Wβ``),
    and leaving it out avoids per-probe elementwise work on every ``(P, B, d)`` batch. Callers that reuse
    one batch for many steps pass it through :meth:`normalize` once and call ``logits(..., normalized=True)``.
    """

    kind: ClassVar[str]

    def __init__(self, n_probes: int, dim: int, *, layer_norm: bool, dropout: float, seed: int):
        self.P, self.dim, self.layer_norm, self.dropout = n_probes, dim, layer_norm, dropout
        self.gen = torch.Generator().manual_seed(seed)
        self.params: dict[str, torch.Tensor] = {}

    def _uniform(self, *shape: int, fan_in: int) -> torch.Tensor:
        """nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(*shape, generator=self.gen) * 2 - 1) * bound

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The probes' input transform (LayerNorm without affine, or nothing)."""
        return F.layer_norm(x, (self.dim,)) if self.layer_norm else x

    def logits(self, x: torch.Tensor, train: bool = False, normalized: bool = False) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define logits()")

    def keep(self, index: torch.Tensor) -> None:
        """Keep only probes ``index`` (their parameters; the optimizer is rebuilt by the caller)."""
        self.params = {k: v[index].detach().clone() for k, v in self.params.items()}
        self.P = len(index)

    def export(self, i: int) -> dict[str, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} must define export()")

    def _export_ln(self, i: int) -> dict[str, torch.Tensor]:
        return {"ln_w": torch.ones(self.dim), "ln_b": torch.zeros(self.dim),
                "has_ln": torch.tensor(int(self.layer_norm), dtype=torch.uint8)}


class BatchedMLP(BatchedProbes):
    """Stacked :class:`~cortex.lenses.probes.MLPClassifier`: W1 (P, d, h), W2 (P, h, h/2), W3 (P, h/2, 1)."""

    kind = "mlp"

    def __init__(self, n_probes: int, dim: int, *, hidden: int = 128, layer_norm: bool = False,
                 dropout: float = 0.1, seed: int = 0):
        super().__init__(n_probes, dim, layer_norm=layer_norm, dropout=dropout, seed=seed)
        h, h2 = hidden, hidden // 2
        self.hidden = hidden
        self.params.update(
            W1=self._uniform(n_probes, dim, h, fan_in=dim), b1=self._uniform(n_probes, 1, h, fan_in=dim),
            W2=self._uniform(n_probes, h, h2, fan_in=h), b2=self._uniform(n_probes, 1, h2, fan_in=h),
            W3=self._uniform(n_probes, h2, 1, fan_in=h2), b3=self._uniform(n_probes, 1, 1, fan_in=h2),
        )

    def logits(self, x: torch.Tensor, train: bool = False, normalized: bool = False) -> torch.Tensor:
        p = self.params
        x = x if normalized else self.normalize(x)
        h = F.dropout(torch.baddbmm(p["b1"], x, p["W1"]).relu(), self.dropout, train)
        h = F.dropout(torch.baddbmm(p["b2"], h, p["W2"]).relu(), self.dropout, train)
        return torch.baddbmm(p["b3"], h, p["W3"]).squeeze(-1)

    def export(self, i: int) -> dict[str, torch.Tensor]:
        p = {k: v[i].detach() for k, v in self.params.items()}
        return {"W1": p["W1"].t().contiguous(), "b1": p["b1"][0].clone(), "W2": p["W2"].t().contiguous(),
                "b2": p["b2"][0].clone(), "W3": p["W3"].t().contiguous(), "b3": p["b3"][0].clone(),
                **self._export_ln(i)}


class BatchedLinear(BatchedProbes):
    """Stacked :class:`~cortex.lenses.probes.LinearProbe`: W (P, d, 1)."""

    kind = "linear"

    def __init__(self, n_probes: int, dim: int, *, hidden: int = 0, layer_norm: bool = False,
                 dropout: float = 0.0, seed: int = 0):
        super().__init__(n_probes, dim, layer_norm=layer_norm, dropout=dropout, seed=seed)
        self.params.update(W=self._uniform(n_probes, dim, 1, fan_in=dim), b=self._uniform(n_probes, 1, 1, fan_in=dim))

    def logits(self, x: torch.Tensor, train: bool = False, normalized: bool = False) -> torch.Tensor:
        x = x if normalized else self.normalize(x)
        return torch.baddbmm(self.params["b"], x, self.params["W"]).squeeze(-1)

    def export(self, i: int) -> dict[str, torch.Tensor]:
        return {"W": self.params["W"][i, :, 0].detach().clone(), "b": self.params["b"][i, 0, 0].detach().clone(),
                **self._export_ln(i)}


BATCHED_KINDS: dict[str, type[BatchedProbes]] = {"mlp": BatchedMLP, "linear": BatchedLinear}


def make_optimizer(params: dict[str, torch.Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the stacked tensors. Adam and decoupled weight decay act element by element, so one
    optimizer over ``(P, ...)`` tensors is exactly P independent per-probe optimizers; the fused kernel
    matters because the update, not the matmuls, dominates a step for thousand-probe stacks. Biases and
    LayerNorm parameters are not decayed."""
    for v in params.values():
        v.requires_grad_(True)
    decay = [v for k, v in params.items() if k.startswith("W")]
    rest = [v for k, v in params.items() if not k.startswith("W")]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # builds without the fused CPU kernel
        return torch.optim.AdamW(groups, lr=lr, foreach=True)
