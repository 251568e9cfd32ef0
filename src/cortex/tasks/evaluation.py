"""Metric accumulators: collect predictions over an evaluation epoch, gather across ranks, reduce.

Each task kind has one accumulator. ``update`` stores detached CPU tensors per batch;
``compute(gather)`` concatenates them, lets ``gather`` join the pieces of every DDP rank (uneven
sizes allowed), and reduces them with the functions of :mod:`cortex.tasks.metrics`. Ensemble
members (the leading ``E`` axis of leaf outputs) are combined first: the mean prediction for
regression (variance = mean member variance + variance of member means), averaged probabilities
for classification and the LM.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import torch

from cortex.tasks import metrics as M

Gather = Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


class MetricAccumulator(abc.ABC):
    """Base: named tensor parts plus a loss total; subclasses define ``update`` and ``reduce``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._parts: dict[str, list[torch.Tensor]] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        self._parts.setdefault(name, []).append(value.detach().float().cpu())

    def add_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Accumulate a batch's mean loss weighted by its size (reported as ``loss``)."""
        self.add("_loss_sum", loss.detach().float().reshape(1) * batch_size)
        self.add("_loss_n", torch.tensor([float(batch_size)]))

    def compute(self, gather: Gather | None = None) -> dict[str, float]:
        """Metric name → value over everything seen since :meth:`reset` (on every rank, if gathered)."""
        gather = gather or _identity
        joined = {name: gather(torch.cat(parts)) for name, parts in sorted(self._parts.items())}
        out = {}
        if "_loss_sum" in joined:
            n = float(joined["_loss_n"].sum())
            out["loss"] = float(joined["_loss_sum"].sum()) / n if n else math.nan
        if any(not k.startswith("_loss") for k in joined):
            out.update(self.reduce({k: v for k, v in joined.items() if not k.startswith("_loss")}))
        return out

    @abc.abstractmethod
    def update(self, *args: torch.Tensor) -> None:
        """Store one batch's predictions and targets."""

    @abc.abstractmethod
    def reduce(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics from the concatenated parts."""


def ensemble_gaussian(loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of an equal-weight mixture of ``E`` Gaussians: ``(E, ...)`` → ``(...)``."""
    mean = loc.mean(0)
    var = scale.pow(2).mean(0) + loc.var(0, unbiased=False)
    return mean, var


class RegressionAccumulator(MetricAccumulator):
    """Spearman ρ, RMSE and Gaussian NLL (per output column, averaged over columns)."""

    def update(self, loc: torch.Tensor, scale: torch.Tensor, target: torch.Tensor) -> None:
        """``loc``/``scale`` ``(E, N, O)``, ``target`` ``(N, O)``; non-finite targets are skipped."""
        mean, var = ensemble_gaussian(loc.float(), scale.float())
        self.add("mean", mean.reshape(-1, mean.shape[-1]))
        self.add("var", var.reshape(-1, var.shape[-1]))
        self.add("target", target.float().reshape(-1, mean.shape[-1]))

    def reduce(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        mean, var, y = values["mean"], values["var"], values["target"]
        rho, err, nll = [], [], []
        for o in range(y.shape[-1]):
            ok = torch.isfinite(y[:, o])
            if not ok.any():
                continue
            m, v, t = mean[ok, o], var[ok, o], y[ok, o]
            rho.append(M.spearman_rho(m, t))
            err.append(M.rmse(m, t))
            nll.append(M.gaussian_nll(m, v, t))
        nanmean = _nanmean
        return {"spearman_rho": nanmean(rho), "rmse": nanmean(err), "nll": nanmean(nll)}


class ClassificationAccumulator(MetricAccumulator):
    """Accuracy, AUROC (one-vs-rest macro for more than two classes) and expected calibration error."""

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """``logits`` ``(E, N, C)``, ``target`` ``(N,)`` class ids (negative = unlabelled, skipped)."""
        probs = logits.float().softmax(-1).mean(0)  # ensemble: average the members' probabilities
        keep = target >= 0
        self.add("probs", probs[keep])
        self.add("target", target[keep].float())

    def reduce(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        probs, y = values["probs"], values["target"].long()
        if y.numel() == 0:
            return {"accuracy": math.nan, "auroc": math.nan, "ece": math.nan}
        log_probs = probs.clamp(min=1e-12).log()  # softmax(log p) == p: AUROC helpers take logits
        return {
            "accuracy": M.accuracy(probs, y),
            "auroc": M.multiclass_auroc(log_probs, y),
            "ece": M.expected_calibration_error(probs, y),
        }


class MaskedLMAccumulator(MetricAccumulator):
    """Masked-token accuracy and perplexity over the corrupted positions of every batch."""

    def update(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """``logits`` ``(E, B, T, V)``, ``target`` ``(B, T)`` clean ids, ``mask`` ``(B, T)`` corrupted positions."""
        probs = logits.float().softmax(-1).mean(0)  # (B, T, V)
        n = int(mask.bool().sum())
        if n == 0:
            return
        out = M.masked_token_metrics(probs.clamp(min=1e-12).log(), target.long(), mask)
        self.add("correct", torch.tensor([out["masked_acc"] * n]))
        self.add("nll", torch.tensor([math.log(out["perplexity"]) * n]))
        self.add("count", torch.tensor([float(n)]))

    def reduce(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        n = float(values["count"].sum())
        if n == 0:
            return {"masked_acc": math.nan, "perplexity": math.nan}
        return {"masked_acc": float(values["correct"].sum()) / n, "perplexity": math.exp(float(values["nll"].sum()) / n)}


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else math.nan
