"""Random search: spend the budget on fresh samples from a sequence sampler, keep the best.

The sampler decides what "random" means. For Ehrlich functions the benchmark samples the feasible
chain (``Ehrlich.random_feasible``), which knows the feasibility constraints that black-box optimizers
must discover; it is a reference point, not a fair competitor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cortex.design.blackbox import BlackBox
from cortex.errors import DesignError

Sampler = Callable[[int, torch.Generator], torch.LongTensor]  # (n, generator) -> [n, L]


def random_search(
    black_box: BlackBox,
    sampler: Sampler,
    *,
    batch_size: int = 128,
    seed: int = 0,
    method: str = "random",
    max_empty_batches: int = 8,
) -> tuple[torch.LongTensor | None, float]:
    """Evaluate batches of ``sampler`` draws until the budget is spent; returns (best ``[L]``, best value).

    Stops early after ``max_empty_batches`` batches in a row bring nothing new (a sampler with
    little entropy). The record of every evaluation is ``black_box.history``.
    """
    if black_box.budget is None:
        raise DesignError("random_search needs a bounded black box; set BlackBox(budget=...).")
    if batch_size < 1:
        raise DesignError(f"batch_size={batch_size} must be >= 1.")
    generator = torch.Generator().manual_seed(int(seed))
    empty, round_ = 0, 0
    while not black_box.exhausted and empty < max_empty_batches:
        round_ += 1
        spent = black_box.evaluate(sampler(batch_size, generator), round=round_, method=method).num_sent
        empty = empty + 1 if spent == 0 else 0
    best = black_box.best()
    return (best[0], best[1]) if best else (None, -math.inf)
