"""Closed-form losses of the leaves, elementwise (no reduction), in plain torch.

Gaussian in natural (exponential-family) parameters: ``eta1 = mu / s2``, ``eta2 = -1 / (2 s2)``,
sufficient statistics ``T(y) = (y, y^2)``, log-partition ``A(eta) = -eta1^2 / (4 eta2) - log(-2 eta2) / 2``
and base measure ``(2 pi)^(-1/2)``, so

    -log p(y) = A(eta) - eta1 * y - eta2 * y^2 + log(2 pi) / 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_partition(eta1: torch.Tensor, eta2: torch.Tensor) -> torch.Tensor:
    """``A(eta) = -eta1^2 / (4 eta2) - log(-2 eta2) / 2`` (requires ``eta2 < 0``)."""
    return -eta1.pow(2) / (4 * eta2) - 0.5 * torch.log(-2 * eta2)


def natural_gaussian_nll(eta1: torch.Tensor, eta2: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``y`` under the Gaussian with natural parameters ``(eta1, eta2)``."""
    return gaussian_log_partition(eta1, eta2) - eta1 * y - eta2 * y.pow(2) + HALF_LOG_2PI


def moment_average(alpha: torch.Tensor, y: torch.Tensor, nominal_var: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Moment average of ``N(0, 1)`` (weight ``alpha``) and ``N(y, nominal_var)`` (weight ``1 - alpha``).

    The mixture's mean and variance: ``m = (1 - a) y``, ``v = a + (1 - a) s0^2 + a (1 - a) y^2``.
    """
    mean = (1 - alpha) * y
    var = alpha + (1 - alpha) * nominal_var + alpha * (1 - alpha) * y.pow(2)
    return mean, var


def natural_gaussian_kl(
    mean_p: torch.Tensor, var_p: torch.Tensor, eta1_q: torch.Tensor, eta2_q: torch.Tensor
) -> torch.Tensor:
    """``KL(p || q)`` with ``p = N(mean_p, var_p)`` and ``q`` in natural parameters.

    Exponential-family form: ``(eta_p - eta_q) · E_p[T] - A(eta_p) + A(eta_q)``, ``E_p[T] = (m, v + m^2)``.
    """
    eta1_p = mean_p / var_p
    eta2_p = -0.5 / var_p
    cross = (eta1_p - eta1_q) * mean_p + (eta2_p - eta2_q) * (var_p + mean_p.pow(2))
    return cross - gaussian_log_partition(eta1_p, eta2_p) + gaussian_log_partition(eta1_q, eta2_q)


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against ``(1 - alpha) * onehot(target) + alpha * uniform``, per example.

    ``logits`` ``(..., C)``, ``targets`` ``(...)`` int, ``alpha`` broadcastable to ``targets``.
    Targets below 0 (e.g. -100) are clamped here; callers mask them out.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, targets.clamp(min=0)[..., None].expand(*logp.shape[:-1], 1)).squeeze(-1)
    uniform = -logp.mean(-1)
    return (1 - alpha) * nll + alpha * uniform
