"""Trunks: combine the roots' features into one ``(B, T, D)`` sequence (registry :data:`TRUNKS`)."""

from __future__ import annotations

import torch
from torch import nn

from cortex.errors import ModelInputError
from cortex.models.neural_tree.outputs import RootOutput, TrunkOutput
from cortex.models.neural_tree.specs import RootSpec, TrunkSpec


def _projection(in_dim: int, out_dim: int, project: bool) -> nn.Module:
    return nn.Linear(in_dim, out_dim, bias=False) if project and in_dim != out_dim else nn.Identity()


class SumTrunk(nn.Module):
    """Sum of (projected) root features, position by position.

    Roots must have the same length ``T`` or be pooled to length 1 (a pooled root, e.g. a sentence
    embedding, is then added at every position). The mask is the union of the roots' masks.
    """

    def __init__(self, spec: TrunkSpec, roots: dict[str, RootSpec], out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.projections = nn.ModuleDict({n: _projection(r.out_dim, out_dim, spec.project) for n, r in roots.items()})

    def forward(self, root_outputs: dict[str, RootOutput]) -> TrunkOutput:
        lengths = {n: r.features.shape[1] for n, r in root_outputs.items()}
        T = max(lengths.values())
        if any(t not in (1, T) for t in lengths.values()):
            raise ModelInputError(
                f"A sum trunk adds root features position by position, but the roots have lengths {lengths}. "
                "Pad all roots to one length in the collator, pool the shorter roots, or use trunk kind 'concat'."
            )
        features = None
        mask = None
        for name, out in root_outputs.items():
            f = self.projections[name](out.features)  # (B, T or 1, D)
            m = out.attention_mask
            features = f if features is None else features + f
            mask = m if mask is None else mask | m
        B = features.shape[0]
        features = features.expand(B, T, -1)
        mask = mask.expand(B, T)
        return TrunkOutput(features=features, attention_mask=mask, root_spans={n: (0, t) for n, t in lengths.items()})


class ConcatTrunk(nn.Module):
    """Roots' positions side by side: ``(B, T_1 + T_2 + ..., D)``.

    Each root is projected to ``out_dim`` when its width differs and gets a learned root embedding
    added, so that branches can tell the roots' positions apart. Roots may have any lengths.
    """

    def __init__(self, spec: TrunkSpec, roots: dict[str, RootSpec], out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.projections = nn.ModuleDict({n: _projection(r.out_dim, out_dim, True) for n, r in roots.items()})
        self.root_embedding = nn.ParameterDict({n: nn.Parameter(torch.zeros(out_dim)) for n in roots})

    def forward(self, root_outputs: dict[str, RootOutput]) -> TrunkOutput:
        feats, masks, spans, start = [], [], {}, 0
        for name, out in root_outputs.items():
            feats.append(self.projections[name](out.features) + self.root_embedding[name])
            masks.append(out.attention_mask)
            spans[name] = (start, start + out.features.shape[1])
            start += out.features.shape[1]
        return TrunkOutput(features=torch.cat(feats, 1), attention_mask=torch.cat(masks, 1), root_spans=spans)


TRUNKS: dict[str, type[nn.Module]] = {"sum": SumTrunk, "concat": ConcatTrunk}
