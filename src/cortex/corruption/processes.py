"""The corruption processes: mask, substitution (uniform or BLOSUM62) and Gaussian.

Each process is an ``nn.Module`` with the same contract::

    result = process(x, frac, allowed=None, ...)     # -> CorruptionResult(values, is_corrupted)

``frac`` is the **per-example** corruption fraction ``(B,)`` (see :mod:`cortex.corruption.schedules`),
``allowed`` a ``(B, T)`` bool mask of positions that may change (``corruption_allowed``: padding
and special tokens are usually excluded). Positions outside ``allowed`` are returned unchanged and
never reported as corrupted. Every random draw can be passed in (``uniform``, ``choice``,
``noise``) so that a corruption is reproducible and identical under ``torch.compile``; when left
out it is drawn with ``torch.rand``/``torch.randn``.

- **mask** (token ids): each allowed position becomes ``mask_token_id`` with probability ``frac``.
- **substitution** (token ids): each allowed position is replaced, with probability ``frac``, by a
  token drawn from a substitution distribution that never proposes the token itself: uniform over
  the corruptible vocabulary, or BLOSUM62 (:mod:`cortex.corruption.blosum`) for proteins.
- **gaussian** (embeddings ``(B, T, D)``): every allowed position of an example with ``frac > 0`` becomes
  ``sqrt(1 - frac) * x + sqrt(frac) * scale * noise`` (variance preserving when ``scale`` is the
  embedding scale); ``frac`` sets the strength, not a selection probability.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from cortex.corruption.blosum import blosum62_transition_matrix
from cortex.errors import ConfigError

CORRUPTION_KINDS = ("mask", "substitution", "gaussian")


@dataclass
class CorruptionResult:
    """Output of a corruption process.

    Attributes:
        values: corrupted ids ``(B, T)`` or embeddings ``(B, T, D)``, same shape and dtype as the input.
        is_corrupted: ``(B, T)`` bool, True where the value was changed by the process.
    """

    values: torch.Tensor
    is_corrupted: torch.Tensor


def select_positions(
    frac: torch.Tensor, allowed: torch.Tensor, uniform: torch.Tensor | None = None
) -> torch.Tensor:
    """Positions chosen independently with probability ``frac[b]`` among ``allowed`` ``(B, T)``.

    ``uniform`` ``(B, T)`` in ``[0, 1)`` makes the choice deterministic (``uniform < frac``).
    """
    u = torch.rand(allowed.shape, device=allowed.device) if uniform is None else uniform
    return (u < frac.to(u.dtype)[:, None]) & allowed


def _allowed_or_all(x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if allowed is None else allowed.bool()


class MaskCorruption(nn.Module):
    """Replace selected token ids by ``mask_token_id``."""

    def __init__(self, mask_token_id: int):
        super().__init__()
        self.mask_token_id = int(mask_token_id)

    def apply(self, ids: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """``ids`` ``(B, T)`` with ``mask_token_id`` wherever ``selected``."""
        return torch.where(selected, torch.full_like(ids, self.mask_token_id), ids)

    def forward(
        self, ids: torch.Tensor, frac: torch.Tensor, allowed: torch.Tensor | None = None,
        uniform: torch.Tensor | None = None,
    ) -> CorruptionResult:
        selected = select_positions(frac, _allowed_or_all(ids, allowed), uniform)
        return CorruptionResult(self.apply(ids, selected), selected)


class UniformSubstitution(nn.Module):
    """Draw a replacement uniformly from the corruptible tokens other than the current one.

    Needs no ``(V, V)`` table, so it also fits the 30k-150k vocabularies of HF roots: with the
    ``C`` corruptible ids listed in ``choices`` and ``rank[i]`` the position of token ``i`` in that
    list, draw ``k`` uniformly from ``{0..C-2}`` and skip over the current token's slot.
    """

    def __init__(self, corruptible: torch.Tensor):
        super().__init__()
        corruptible = corruptible.bool()
        choices = torch.nonzero(corruptible).flatten()
        if choices.numel() < 2:
            raise ConfigError(
                f"Uniform substitution needs at least 2 corruptible tokens; the vocabulary has {choices.numel()}. "
                "Use the mask or gaussian corruption for this root."
            )
        rank = torch.full((corruptible.numel(),), choices.numel(), dtype=torch.long, device=corruptible.device)
        rank[choices] = torch.arange(choices.numel(), device=corruptible.device)
        self.register_buffer("choices", choices)
        self.register_buffer("rank", rank)

    def sample(self, ids: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """A replacement id for every position ``(B, T)``; ``uniform`` in ``[0, 1)`` of the same shape."""
        n = self.choices.numel()
        k = (uniform * (n - 1)).long().clamp(max=n - 2)
        k = k + (k >= self.rank[ids]).long()
        return self.choices[k]


class MatrixSubstitution(nn.Module):
    """Draw a replacement from row ``ids`` of a row-stochastic ``(V, V)`` matrix (inverse CDF)."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ConfigError(f"A substitution matrix must be square (V, V); got shape {tuple(matrix.shape)}.")
        if (matrix < 0).any() or not torch.allclose(matrix.sum(-1), torch.ones(matrix.shape[0], dtype=matrix.dtype, device=matrix.device), atol=1e-5):
            raise ConfigError("Substitution matrix rows must be probabilities (non-negative, summing to 1).")
        cdf = matrix.double().cumsum(-1)
        cdf[:, -1] = 1.0  # no u in [0, 1) can fall past the last column through rounding
        self.register_buffer("cdf", cdf.float())

    def sample(self, ids: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """A replacement id for every position ``(B, T)``; ``uniform`` in ``[0, 1)`` of the same shape."""
        cdf = self.cdf[ids]  # (B, T, V)
        return (cdf <= uniform[..., None].to(cdf.dtype)).sum(-1).clamp(max=cdf.shape[-1] - 1)


def _uniform(vocab: Mapping[str, int], vocab_size: int, corruptible: torch.Tensor) -> nn.Module:
    return UniformSubstitution(corruptible)


def _blosum62(vocab: Mapping[str, int], vocab_size: int, corruptible: torch.Tensor) -> nn.Module:
    return MatrixSubstitution(blosum62_transition_matrix(vocab, vocab_size))


# substitution distribution by config name: (vocab, vocab_size, corruptible (V,) bool) -> sampler
SUBSTITUTIONS: dict[str, Callable[[Mapping[str, int], int, torch.Tensor], nn.Module]] = {
    "uniform": _uniform,
    "blosum62": _blosum62,
}


def build_substitution(name: str, vocab: Mapping[str, int], vocab_size: int, corruptible: torch.Tensor) -> nn.Module:
    """The substitution sampler called ``name`` (``"uniform"`` or ``"blosum62"``) for a vocabulary."""
    if name not in SUBSTITUTIONS:
        raise ConfigError.bad_choice("substitution", name, SUBSTITUTIONS)
    return SUBSTITUTIONS[name](vocab, vocab_size, corruptible)


class SubstitutionCorruption(nn.Module):
    """Replace selected token ids by draws from a substitution sampler."""

    def __init__(self, sampler: nn.Module):
        super().__init__()
        self.sampler = sampler

    def apply(self, ids: torch.Tensor, selected: torch.Tensor, choice: torch.Tensor | None = None) -> torch.Tensor:
        """``ids`` ``(B, T)`` with a substitute wherever ``selected``; ``choice`` ``(B, T)`` uniform draws."""
        u = torch.rand(ids.shape, device=ids.device) if choice is None else choice
        return torch.where(selected, self.sampler.sample(ids, u), ids)

    def forward(
        self, ids: torch.Tensor, frac: torch.Tensor, allowed: torch.Tensor | None = None,
        uniform: torch.Tensor | None = None, choice: torch.Tensor | None = None,
    ) -> CorruptionResult:
        selected = select_positions(frac, _allowed_or_all(ids, allowed), uniform)
        return CorruptionResult(self.apply(ids, selected, choice), selected)


class GaussianCorruption(nn.Module):
    """Variance-preserving Gaussian noise on embeddings: ``sqrt(1-f) x + sqrt(f) * scale * eps``."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = float(scale)

    def apply(self, x: torch.Tensor, frac: torch.Tensor, selected: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, T, D)`` noised at ``selected`` positions with per-example ``frac`` ``(B,)``."""
        eps = torch.randn_like(x) if noise is None else noise.to(x.dtype)
        f = frac.to(x.dtype)[:, None, None]
        noisy = torch.sqrt(1.0 - f) * x + torch.sqrt(f) * self.scale * eps
        return torch.where(selected[..., None], noisy, x)

    def forward(
        self, x: torch.Tensor, frac: torch.Tensor, allowed: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> CorruptionResult:
        selected = _allowed_or_all(x, allowed) & (frac > 0)[:, None]
        return CorruptionResult(self.apply(x, frac, selected, noise), selected)
