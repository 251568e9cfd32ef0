"""Typed outputs of every NeuralTree node. Shapes: ``B`` batch, ``T`` positions, ``E`` ensemble members.

Leaf outputs always carry the ensemble axis first, ``(E, B, ...)``, even when ``E == 1``, so code
that treats the ensemble as posterior samples (acquisition functions) never special-cases it.

Every output is a ``transformers.utils.ModelOutput``: attribute, key (``out["leaf_outputs"]``) and
index access as in any HF model, and a registered pytree node, so ``torch.export`` and
``torch.compile`` pass through them. As ModelOutput requires, every field after the first defaults
to ``None``; nodes always fill the ones documented as set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class RootOutput(ModelOutput):
    """One root's output.

    Attributes:
        features: ``(B, T_r, D_r)`` root features (``T_r == 1`` for pooled HF roots).
        attention_mask: ``(B, T_r)`` bool, True at real positions of ``features``.
        token_embeddings: ``(B, T, E_r)`` input embeddings after corruption (what the encoder read);
            differentiate with respect to these for token-level guidance.
        input_ids: ``(B, T)`` clean ids (targets of a denoising leaf), ``None`` when fed embeddings.
        corrupted_ids: ``(B, T)`` ids after mask/substitution corruption (``input_ids`` when none).
        is_corrupted: ``(B, T)`` bool, where the corruption changed the input.
        corrupt_frac: ``(B,)`` float, the per-example corruption fraction (0 when not corrupted).
        input_mask: ``(B, T)`` bool, the attention mask of the token inputs.
    """

    features: torch.Tensor
    attention_mask: torch.Tensor | None = None
    token_embeddings: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None
    corrupted_ids: torch.Tensor | None = None
    is_corrupted: torch.Tensor | None = None
    corrupt_frac: torch.Tensor | None = None
    input_mask: torch.Tensor | None = None


@dataclass
class TrunkOutput(ModelOutput):
    """The trunk's combined features.

    Attributes:
        features: ``(B, T, D)``.
        attention_mask: ``(B, T)`` bool.
        root_spans: root name → ``(start, end)`` of its positions in ``features`` (``sum``: every
            root spans ``(0, its length)``; ``concat``: consecutive spans).
    """

    features: torch.Tensor
    attention_mask: torch.Tensor | None = None
    root_spans: dict[str, tuple[int, int]] | None = None


@dataclass
class BranchOutput(ModelOutput):
    """A branch's features for each of its ``E`` ensemble members.

    Attributes:
        features: ``(E, B, T, D_b)`` per-position features.
        attention_mask: ``(B, T)`` bool (shared by members).
        pooled: ``(E, B, D_b)`` one vector per example and member.
    """

    features: torch.Tensor
    attention_mask: torch.Tensor | None = None
    pooled: torch.Tensor | None = None


@dataclass
class RegressorLeafOutput(ModelOutput):
    """Gaussian predictions in natural parameters and in target units.

    Attributes:
        loc: ``(E, B, O)`` predictive mean, in target units (standardization undone).
        scale: ``(E, B, O)`` predictive standard deviation, in target units.
        eta1: ``(E, B, O)`` first natural parameter (standardized target space).
        eta2: ``(E, B, O)`` second natural parameter, ``< 0``.
    """

    loc: torch.Tensor
    scale: torch.Tensor | None = None
    eta1: torch.Tensor | None = None
    eta2: torch.Tensor | None = None

    def prediction(self) -> torch.Tensor:
        """Ensemble-mean predictive mean, batch first: ``(B, O)`` (``(B, T, O)`` per position)."""
        return self.loc.mean(0)


@dataclass
class SequenceRegressorLeafOutput(RegressorLeafOutput):
    """As :class:`RegressorLeafOutput` with a position axis: ``(E, B, T, O)``."""


@dataclass
class ClassifierLeafOutput(ModelOutput):
    """Attributes: logits ``(E, B, C)``."""

    logits: torch.Tensor

    def prediction(self) -> torch.Tensor:
        """Ensemble-mean class probabilities ``(B, C)``."""
        return self.logits.float().softmax(-1).mean(0)


@dataclass
class DenoisingLMLeafOutput(ModelOutput):
    """Attributes: logits ``(E, B, T, V)`` over the root's vocabulary at the root's positions."""

    logits: torch.Tensor

    def prediction(self) -> torch.Tensor:
        """Ensemble-mean token probabilities ``(B, T, V)``."""
        return self.logits.float().softmax(-1).mean(0)


LeafOutput = RegressorLeafOutput | ClassifierLeafOutput | DenoisingLMLeafOutput


@dataclass
class NeuralTreeOutput(ModelOutput):
    """Everything a forward pass computed, node by node (only the requested leaves' branches).

    Attributes:
        loss: scalar, the weighted sum of the leaf losses when ``forward`` got ``targets``; else ``None``
            (and then absent from the keys and the tuple, as in every HF output).
        leaf_losses: leaf name → scalar loss of each leaf in ``targets`` (unweighted), or ``None``.
        root_outputs: root name → :class:`RootOutput` (empty after ``call_from_trunk``).
        trunk_outputs: :class:`TrunkOutput`.
        branch_outputs: branch name → :class:`BranchOutput`.
        leaf_outputs: leaf name → its output (leading ensemble axis ``E``).
    """

    loss: torch.Tensor | None = None
    leaf_losses: dict[str, torch.Tensor] | None = None
    root_outputs: dict[str, RootOutput] | None = None
    trunk_outputs: TrunkOutput | None = None
    branch_outputs: dict[str, BranchOutput] | None = None
    leaf_outputs: dict[str, LeafOutput] | None = None
