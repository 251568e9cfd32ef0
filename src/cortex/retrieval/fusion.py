"""Fusing the BM25 and dense ranked lists into one.

Two methods, chosen by :class:`FusionConfig.method`:

* ``rrf`` — reciprocal rank fusion (Cormack et al., 2009): ``sum_lists w / (k + rank)``. It needs no
  score calibration between BM25 (unbounded) and cosine (in [-1, 1]) but throws away how far apart
  the scores are: a clear BM25 winner and a near-tie count the same.
* ``score`` — relative score fusion: each list's scores are min-max scaled to [0, 1] over its
  candidates and summed with weights; a document missing from a list scores 0 there. It keeps the
  margins (a clear identifier match stays clear).

The shipped defaults (RRF, BM25 weight 0.4 against 0.6 for dense, ``k`` 30) are the best of the
grid in ``benchmarks/rag_tune.py`` on its own tuning questions
(``benchmarks/data/rag_tuning_queries.jsonl``, symbols disjoint from the evaluation set), never on
the questions ``benchmarks/rag_eval.py`` scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cortex.errors import ConfigError

FUSION_METHODS = ("rrf", "score")


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], weights: Sequence[float] | None = None,
                           k: float = 60.0) -> list[tuple[str, float]]:
    """Fuse ranked id lists (best first, rank 1 = first) → ``(id, fused score)`` best first.

    Ties keep the order of first appearance across the lists, so results are deterministic.
    """
    weights = _weights(weights, len(rankings))
    if k <= 0:
        raise ConfigError(f"rrf k={k} must be positive (60 is the usual choice).")
    scores: dict[str, float] = {}
    for ranking, w in zip(rankings, weights):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
    return _sorted(scores, rankings)


def relative_score_fusion(scored: Sequence[Sequence[tuple[str, float]]],
                          weights: Sequence[float] | None = None) -> list[tuple[str, float]]:
    """Fuse ``(id, score)`` lists (best first) by weighted sums of min-max scaled scores → best first.

    A list whose scores are all equal gives each of its documents 1 (they all matched equally).
    """
    weights = _weights(weights, len(scored))
    fused: dict[str, float] = {}
    for lst, w in zip(scored, weights):
        if not lst:
            continue
        values = [s for _, s in lst]
        lo, hi = min(values), max(values)
        span = hi - lo
        for doc, s in lst:
            fused[doc] = fused.get(doc, 0.0) + w * ((s - lo) / span if span > 0 else 1.0)
    return _sorted(fused, [[d for d, _ in lst] for lst in scored])


@dataclass(frozen=True)
class FusionConfig:
    """How hybrid search fuses its lists.

    Args:
        method: ``rrf`` or ``score`` (see the module docstring).
        bm25_weight: weight of the BM25 list; the dense list gets ``1 - bm25_weight``.
        rrf_k: the ``k`` of RRF (ignored by ``score``).
    """

    method: str = "rrf"
    bm25_weight: float = 0.4
    rrf_k: float = 30.0

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ConfigError.bad_choice("fusion.method", self.method, FUSION_METHODS)
        if not 0.0 <= self.bm25_weight <= 1.0:
            raise ConfigError(f"fusion.bm25_weight={self.bm25_weight} must be in [0, 1] (the dense list gets the rest).")
        if self.rrf_k <= 0:
            raise ConfigError(f"fusion.rrf_k={self.rrf_k} must be positive (60 is the usual choice).")

    def fuse(self, dense: Sequence[tuple[str, float]], bm25: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        """Fuse the dense and BM25 ``(id, score)`` lists (each best first) → ``(id, fused score)`` best first."""
        weights = (1.0 - self.bm25_weight, self.bm25_weight)
        if self.method == "rrf":
            return reciprocal_rank_fusion([[d for d, _ in dense], [d for d, _ in bm25]], weights, self.rrf_k)
        return relative_score_fusion([dense, bm25], weights)


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    weights = [1.0] * n if weights is None else list(weights)
    if len(weights) != n:
        raise ConfigError(f"{len(weights)} fusion weights for {n} rankings; give one weight per ranking.")
    return weights


def _sorted(scores: dict[str, float], rankings: Sequence[Sequence[str]]) -> list[tuple[str, float]]:
    first: dict[str, int] = {}
    for doc in (d for r in rankings for d in r):
        first.setdefault(doc, len(first))
    return sorted(scores.items(), key=lambda kv: (-kv[1], first[kv[0]]))
