"""One compile-friendly corruption layer: the kind of corruption is a tensor weight, not a branch.

A root calls :class:`CorruptionLayer` between its token embedding and its encoder. The layer always
computes all three corruptions of the clean embeddings and blends them with per-example weights
``w = (w_mask, w_substitution, w_gaussian)``::

    out = x + w_mask * (masked - x) + w_substitution * (substituted - x) + w_gaussian * (noised - x)

With a one-hot ``w`` (what :func:`kind_weights` builds) this is exactly the chosen process and,
because ``0 * finite == 0``, exactly ``x`` where a process did not apply. No Python ``if`` depends
on the kind, so one compiled graph serves every kind (``torch.compile(fullgraph=True)``), and the
kind can differ per example. Masking and substitution act on token ids; when a root is fed
embeddings instead of ids, masking writes the mask token's embedding and substitution leaves the
embeddings unchanged (there are no ids to substitute).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from cortex.corruption.processes import (
    CORRUPTION_KINDS,
    GaussianCorruption,
    MaskCorruption,
    SubstitutionCorruption,
    select_positions,
)
from cortex.corruption.schedules import NoiseSchedule
from cortex.errors import ConfigError, ModelInputError


def kind_weights(kind: str | Mapping[str, float]) -> torch.Tensor:
    """Weights ``(K,)`` over :data:`CORRUPTION_KINDS` (``mask, substitution, gaussian``).

    ``kind_weights("mask")`` is one-hot; a mapping such as ``{"mask": 0.5, "gaussian": 0.5}`` blends.
    """
    spec = {kind: 1.0} if isinstance(kind, str) else dict(kind)
    for name in spec:
        if name not in CORRUPTION_KINDS:
            raise ConfigError.bad_choice("corruption kind", name, CORRUPTION_KINDS)
    return torch.tensor([float(spec.get(k, 0.0)) for k in CORRUPTION_KINDS], device="cpu")


@dataclass
class CorruptionNoise:
    """Optional pre-drawn randomness for a reproducible corruption (all default to fresh draws).

    Attributes:
        select: ``(B, T)`` uniform ``[0, 1)``; a position is chosen where ``select < frac``.
        substitute: ``(B, T)`` uniform ``[0, 1)``; picks the substitute token.
        gaussian: ``(B, T, E)`` standard normal noise for the Gaussian process.
    """

    select: torch.Tensor | None = None
    substitute: torch.Tensor | None = None
    gaussian: torch.Tensor | None = None


@dataclass
class CorruptionParams:
    """How to corrupt one root's input in a forward pass.

    Attributes:
        frac: ``(B,)`` per-example corruption fraction in ``[0, 1]``; 0 leaves the example untouched.
        kind: ``(K,)`` or ``(B, K)`` weights over ``mask, substitution, gaussian`` (see
            :func:`kind_weights`); ``None`` uses the kind configured on the root.
        allowed: ``(B, T)`` bool ``corruption_allowed``; ``None`` allows every non-special, non-pad token.
            Always intersected with the attention mask.
        noise: pre-drawn randomness (:class:`CorruptionNoise`) or ``None``.
    """

    frac: torch.Tensor
    kind: torch.Tensor | None = None
    allowed: torch.Tensor | None = None
    noise: CorruptionNoise | None = None

    @classmethod
    def sample(
        cls, batch_size: int, schedule: NoiseSchedule, kind: str | Mapping[str, float] | None = None,
        generator: torch.Generator | None = None,
    ) -> "CorruptionParams":
        """Fractions for ``batch_size`` examples from ``schedule`` (timesteps uniform on ``{1..T}``)."""
        return cls(
            frac=schedule.sample_corrupt_frac(batch_size, generator),
            kind=None if kind is None else kind_weights(kind),
        )


@dataclass
class CorruptionOutput:
    """What the corruption layer hands back to the root.

    Attributes:
        embeddings: ``(B, T, E)`` corrupted token embeddings.
        corrupted_ids: ``(B, T)`` ids after mask/substitution, or ``None`` when fed embeddings.
        is_corrupted: ``(B, T)`` bool.
        frac: ``(B,)`` float32 corruption fraction used.
    """

    embeddings: torch.Tensor
    corrupted_ids: torch.Tensor | None
    is_corrupted: torch.Tensor
    frac: torch.Tensor


class CorruptionLayer(nn.Module):
    """Always-apply mask + substitution + Gaussian corruption selected by tensor weights.

    Args:
        corruptible: ``(V,)`` bool, tokens that may be corrupted by default (not pad/special).
        mask_token_id: id whose embedding replaces masked positions; ``None`` masks to zeros
            (for vocabularies without a mask token).
        substitution: a sampler from :data:`cortex.corruption.processes.SUBSTITUTIONS`.
        gaussian_scale: standard deviation of the Gaussian noise (in embedding units).
        kind: default kind when :class:`CorruptionParams` gives none.
    """

    def __init__(
        self, corruptible: torch.Tensor, mask_token_id: int | None, substitution: nn.Module,
        gaussian_scale: float = 1.0, kind: str | Mapping[str, float] = "mask",
    ):
        super().__init__()
        self.mask_token_id = mask_token_id
        self.mask = MaskCorruption(mask_token_id if mask_token_id is not None else 0)
        self.substitution = SubstitutionCorruption(substitution)
        self.gaussian = GaussianCorruption(gaussian_scale)
        # persistent so that from_pretrained (which builds on the meta device) restores them
        self.register_buffer("default_kind", kind_weights(kind))
        self.register_buffer("corruptible", corruptible.bool().clone())

    def allowed_positions(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor) -> torch.Tensor:
        """Default ``corruption_allowed`` ``(B, T)``: real (unpadded) tokens that are not special."""
        if input_ids is None:
            return attention_mask
        return attention_mask & self.corruptible[input_ids]

    def _weights(self, kind: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        w = self.default_kind if kind is None else kind.to(device=device, dtype=torch.float32)
        if w.shape[-1] != len(CORRUPTION_KINDS) or w.dim() > 2:
            raise ModelInputError(
                f"corruption kind weights have shape {tuple(w.shape)}; pass (3,) or (B, 3) over "
                f"{', '.join(CORRUPTION_KINDS)} (build them with cortex.corruption.kind_weights)."
            )
        return w.expand(batch, -1) if w.dim() == 1 else w

    def forward(
        self,
        embeddings: torch.Tensor,
        input_ids: torch.Tensor | None,
        embed: Callable[[torch.Tensor], torch.Tensor],
        attention_mask: torch.Tensor,
        params: CorruptionParams,
    ) -> CorruptionOutput:
        """Corrupt ``embeddings`` ``(B, T, E)`` of ``input_ids`` ``(B, T)`` (or of no ids).

        ``embed`` maps ids to embeddings (the root's token embedding); ``attention_mask`` is ``(B, T)`` bool.
        """
        B, T, _ = embeddings.shape
        noise = params.noise if params.noise is not None else CorruptionNoise()
        allowed = self.allowed_positions(input_ids, attention_mask)
        if params.allowed is not None:
            allowed = allowed & params.allowed.bool()
        frac = params.frac.to(device=embeddings.device, dtype=torch.float32).reshape(B)
        w = self._weights(params.kind, B, embeddings.device).to(embeddings.dtype)  # (B, K)
        w_mask, w_sub, w_gauss = (w[:, i, None, None] for i in range(3))  # each (B, 1, 1)

        selected = select_positions(frac, allowed, noise.select)  # (B, T) for mask and substitution
        if self.mask_token_id is None:
            mask_vec = torch.zeros_like(embeddings[:1, :1])
        else:
            mask_vec = embed(torch.full((1, 1), self.mask_token_id, dtype=torch.long, device=embeddings.device))
        masked = torch.where(selected[..., None], mask_vec.to(embeddings.dtype), embeddings)

        if input_ids is not None:
            sub_ids = self.substitution.apply(input_ids, selected, noise.substitute)
            substituted = torch.where(selected[..., None], embed(sub_ids).to(embeddings.dtype), embeddings)
        else:
            sub_ids, substituted = None, embeddings

        noised_at = allowed & (frac > 0)[:, None]
        noised = self.gaussian.apply(embeddings, frac, noised_at, noise.gaussian)

        out = embeddings + w_mask * (masked - embeddings) + w_sub * (substituted - embeddings) \
            + w_gauss * (noised - embeddings)
        discrete = (w[:, 0] + w[:, 1] > 0)[:, None]
        is_corrupted = (selected & discrete) | (noised_at & (w[:, 2] > 0)[:, None])

        corrupted_ids = None
        if input_ids is not None:
            corrupted_ids = self.mask.apply(input_ids, selected & (w[:, 0] > 0)[:, None])
            corrupted_ids = torch.where(selected & (w[:, 1] > 0)[:, None], sub_ids, corrupted_ids)
        return CorruptionOutput(out, corrupted_ids, is_corrupted, frac)
