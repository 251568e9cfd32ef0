"""Fusing ranked lists: reciprocal rank fusion (Cormack et al., 2009).

RRF adds ``weight / (k + rank)`` over the lists a document appears in. It needs no score
calibration between BM25 (unbounded) and cosine (in [-1, 1]), which is why it is the default.
"""

from __future__ import annotations

from collections.abc import Sequence

from cortex.errors import ConfigError


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], weights: Sequence[float] | None = None,
                           k: float = 60.0) -> list[tuple[str, float]]:
    """Fuse ranked id lists (best first, rank 1 = first) → ``(id, fused score)`` best first.

    Ties keep the order of first appearance across the lists, so results are deterministic.
    """
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ConfigError(f"{len(weights)} fusion weights for {len(rankings)} rankings; give one weight per ranking.")
    if k <= 0:
        raise ConfigError(f"rrf k={k} must be positive (60 is the usual choice).")
    scores: dict[str, float] = {}
    for ranking, w in zip(rankings, weights):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
    first = {doc: i for i, doc in enumerate(d for r in rankings for d in r)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], first[kv[0]]))
