"""Task metrics computed from plain tensors (no model code): regression, classification and LM."""

from __future__ import annotations

import math

import numpy as np
import torch


def spearman_rho(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    from scipy.stats import spearmanr

    p, t = pred.detach().double().cpu().numpy().ravel(), target.detach().double().cpu().numpy().ravel()
    if len(p) < 2 or np.all(p == p[0]) or np.all(t == t[0]):
        return float("nan")
    return float(spearmanr(p, t).statistic)


def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((pred.double() - target.double()) ** 2)))


def gaussian_nll(mean: torch.Tensor, var: torch.Tensor, target: torch.Tensor) -> float:
    """Mean negative log-likelihood of ``target`` under N(mean, var)."""
    var = var.double()
    return float(torch.mean(0.5 * (torch.log(2 * math.pi * var) + (target.double() - mean.double()) ** 2 / var)))


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return float((logits.argmax(-1) == target).double().mean())


def auroc(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Binary AUROC by the rank-sum (Mann-Whitney) formula, ties averaged; NaN with one class only."""
    from scipy.stats import rankdata

    s, y = scores.detach().double().cpu().numpy().ravel(), target.detach().cpu().numpy().ravel().astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def multiclass_auroc(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Macro one-vs-rest AUROC over classes present in ``target`` (binary AUROC for 2 classes)."""
    probs = logits.softmax(-1)
    if probs.shape[-1] == 2:
        return auroc(probs[:, 1], target)
    vals = [auroc(probs[:, c], target == c) for c in range(probs.shape[-1])]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor, n_bins: int = 15) -> float:
    """ECE of the top-class confidence over ``n_bins`` equal-width bins (``probs`` is ``(N, C)``)."""
    conf, pred = probs.max(-1)
    correct = (pred == target).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype)
    ece = torch.zeros((), dtype=torch.float64)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.double().mean() * (conf[in_bin].double().mean() - correct[in_bin].mean()).abs()
    return float(ece)


def macro_f1(pred: torch.Tensor, target: torch.Tensor, num_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over classes that occur in ``pred`` or ``target``."""
    k = num_classes or int(max(pred.max(), target.max())) + 1
    f1s = []
    for c in range(k):
        tp = int(((pred == c) & (target == c)).sum())
        fp = int(((pred == c) & (target != c)).sum())
        fn = int(((pred != c) & (target == c)).sum())
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else float("nan")


def masked_token_metrics(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Accuracy and perplexity of ``logits`` ``(B, T, V)`` at positions where ``mask`` ``(B, T)`` is true."""
    m = mask.bool()
    if not m.any():
        return {"masked_acc": float("nan"), "perplexity": float("nan")}
    sel_logits, sel_target = logits[m], target[m]
    nll = torch.nn.functional.cross_entropy(sel_logits.float(), sel_target)
    return {"masked_acc": accuracy(sel_logits, sel_target), "perplexity": float(torch.exp(nll))}
