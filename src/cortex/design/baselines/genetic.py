"""The genetic-algorithm baseline of the Ehrlich paper: quantile survival, crossover, mutation.

It follows pytorch-holo's ``DiscreteEvolution`` optimizer (holo-bench), which Stanton et al. 2024 use
as their reference GA: each generation keeps the top ``survival_quantile`` of the population, refills
it with children whose every position comes from one of two random survivors (``crossover_prob`` is
the chance of taking the second parent's state), and mutates each position of a child to a uniformly
random state with probability ``mutation_prob``.

Two changes make it honest under a black-box budget, where holo re-scores the whole population
every step: survivors keep their recorded value (never re-sent), and a child that equals a sequence
already evaluated (or another child) is bred again, so each generation spends its evaluations on new
sequences only. Survivors are not mutated in place (an elitist ``mu + lambda`` scheme), and ties at
the survival cut are broken at random so equal-valued sequences share the places.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cortex.design.blackbox import BatchResult, BlackBox, sequence_keys
from cortex.errors import DesignError


@dataclass(frozen=True)
class GeneticConfig:
    """Settings of :class:`GeneticAlgorithm`; validates itself.

    Args:
        population_size: sequences alive after each generation (survivors + children).
        survival_quantile: fraction of the population kept each generation; keeps at least 2 sequences.
        mutation_prob: per-position chance of a uniform random state; ``None`` means ``mutation_rate / L``.
        mutation_rate: expected mutations per child when ``mutation_prob`` is None.
        crossover_prob: per-position chance a child takes the second parent's state (0.5: uniform crossover).
        max_generations: stop after this many generations (``None``: run until the budget is spent).
        max_breeding_attempts: times a child that repeats a known sequence is bred again before giving up.
    """

    # defaults tuned on Ehrlich (32, 32, 4, 4, 4) and (32, 128, 4, 4, 4) at 4,096 evaluations (24 held-out
    # instances each): small populations win under a budget because they run more generations
    population_size: int = 16
    survival_quantile: float = 0.25
    mutation_prob: float | None = None
    mutation_rate: float = 1.5
    crossover_prob: float = 0.2
    max_generations: int | None = None
    max_breeding_attempts: int = 16

    def __post_init__(self) -> None:
        size = self.population_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise DesignError(f"population_size={self.population_size!r} must be an integer >= 2.")
        if not 0.0 < self.survival_quantile < 1.0:
            raise DesignError(f"survival_quantile={self.survival_quantile} must be in (0, 1).")
        if self.num_survivors >= self.population_size:
            raise DesignError(
                f"survival_quantile={self.survival_quantile} keeps all {self.population_size} sequences, leaving no "
                "room for children; lower survival_quantile or raise population_size."
            )
        if self.mutation_prob is not None and not 0.0 < self.mutation_prob < 1.0:
            raise DesignError(f"mutation_prob={self.mutation_prob} must be in (0, 1), or None for mutation_rate / L.")
        if not self.mutation_rate > 0.0:
            raise DesignError(f"mutation_rate={self.mutation_rate} must be > 0.")
        if not 0.0 <= self.crossover_prob <= 1.0:
            raise DesignError(f"crossover_prob={self.crossover_prob} must be in [0, 1].")
        if self.max_generations is not None and self.max_generations < 1:
            raise DesignError(f"max_generations={self.max_generations} must be >= 1 or None.")
        if self.max_breeding_attempts < 1:
            raise DesignError(f"max_breeding_attempts={self.max_breeding_attempts} must be >= 1.")

    @property
    def num_survivors(self) -> int:
        """Sequences kept per generation: ``ceil(survival_quantile * population_size)``, at least 2."""
        return max(2, math.ceil(self.survival_quantile * self.population_size))

    def mutation_probability(self, length: int) -> float:
        """The per-position mutation probability for sequences of ``length``."""
        return self.mutation_prob if self.mutation_prob is not None else min(self.mutation_rate / length, 0.5)


@dataclass(frozen=True)
class GeneticResult:
    """The outcome of a GA run; the full record is ``black_box.history``.

    Attributes:
        best_states: ``[L]`` best feasible sequence found (``None`` if none was feasible).
        best_value: its value (``-inf`` if none was feasible).
        generations: generations bred.
        evaluations: evaluations spent by the black box (including the initial population).
        stop_reason: ``"budget"``, ``"max_generations"`` or ``"no_new_children"``.
    """

    best_states: torch.LongTensor | None
    best_value: float
    generations: int
    evaluations: int
    stop_reason: str


class GeneticAlgorithm:
    """Budgeted GA over integer-coded sequences; see the module docstring for the scheme."""

    def __init__(self, config: GeneticConfig | None = None) -> None:
        self.config = config or GeneticConfig()

    def run(
        self,
        black_box: BlackBox,
        initial: torch.Tensor,
        *,
        seed: int = 0,
        method: str = "ga",
        on_generation: Callable[[int, BlackBox], None] | None = None,
    ) -> GeneticResult:
        """Evolve from ``initial`` ``[n, L]`` until the budget (or ``max_generations``) is spent.

        The initial sequences are evaluated first (round 0) and count against the budget; generation
        ``g`` is recorded as round ``g``. ``on_generation(g, black_box)`` is called after each generation.
        """
        cfg = self.config
        if black_box.budget is None and cfg.max_generations is None:
            raise DesignError("Neither a budget nor max_generations bounds this GA run; set BlackBox(budget=...) "
                              "or GeneticConfig(max_generations=...).")
        if not isinstance(initial, torch.Tensor) or initial.dim() != 2 or len(initial) == 0:
            raise DesignError("initial must be a non-empty LongTensor [n, length] of starting sequences.")
        generator = torch.Generator().manual_seed(int(seed))
        first = black_box.evaluate(initial, round=0, method=method)
        population, values = self._known(black_box.validate(initial), first)
        if len(population) == 0:
            raise DesignError("No initial sequence could be evaluated (budget 0?); give the black box a budget > 0.")

        generation, stop = 0, "budget"
        while True:
            if black_box.exhausted:
                stop = "budget"
                break
            if cfg.max_generations is not None and generation >= cfg.max_generations:
                stop = "max_generations"
                break
            survivors, survivor_values = self._select(population, values, generator)
            wanted = cfg.population_size - len(survivors)
            if black_box.remaining is not None:
                wanted = min(wanted, black_box.remaining)
            children = self._breed(survivors, wanted, black_box, generator)
            if len(children) == 0:
                stop = "no_new_children"
                break
            generation += 1
            result = black_box.evaluate(children, round=generation, method=method)
            children, child_values = self._known(children, result)
            population = torch.cat([survivors, children])
            values = torch.cat([survivor_values, child_values])
            if on_generation is not None:
                on_generation(generation, black_box)

        best = black_box.best()
        return GeneticResult(
            best_states=best[0] if best else None, best_value=best[1] if best else -math.inf,
            generations=generation, evaluations=black_box.evaluations, stop_reason=stop,
        )

    @staticmethod
    def _known(x: torch.LongTensor, result: BatchResult) -> tuple[torch.LongTensor, torch.Tensor]:
        """Rows with a recorded value, deduplicated, with NaN (failed) ranked as ``-inf``."""
        keep = result.known.clone()
        seen: set[bytes] = set()
        for i, key in enumerate(sequence_keys(x)):
            if keep[i]:
                keep[i] = key not in seen
                seen.add(key)
        values = torch.nan_to_num(result.values[keep], nan=-math.inf)
        return x[keep], values

    def _select(self, population, values, generator) -> tuple[torch.LongTensor, torch.Tensor]:
        """The top ``num_survivors`` by value, ties broken by a random permutation."""
        shuffle = torch.randperm(len(population), generator=generator)
        order = torch.argsort(values[shuffle], descending=True, stable=True)
        keep = shuffle[order[: self.config.num_survivors]]
        return population[keep], values[keep]

    def _breed(self, survivors: torch.LongTensor, wanted: int, black_box: BlackBox, generator) -> torch.LongTensor:
        """Up to ``wanted`` children ``[n, L]`` that the black box has not seen and that differ from each other."""
        cfg = self.config
        num, length = survivors.shape
        p_mut = cfg.mutation_probability(length)
        kept: list[torch.LongTensor] = []
        keys: set[bytes] = set()
        for _ in range(cfg.max_breeding_attempts):
            need = wanted - sum(len(k) for k in kept)
            if need <= 0:
                break
            first = survivors[torch.randint(num, (need,), generator=generator)]
            second = survivors[torch.randint(num, (need,), generator=generator)]
            take_second = torch.rand(need, length, generator=generator) < cfg.crossover_prob
            child = torch.where(take_second, second, first)
            mutate = torch.rand(need, length, generator=generator) < p_mut
            random_states = torch.randint(black_box.num_states, (need, length), generator=generator)
            child = torch.where(mutate, random_states, child)
            novel = ~black_box.seen(child)
            for row, key, ok in zip(child, sequence_keys(child), novel.tolist()):
                if ok and key not in keys:
                    keys.add(key)
                    kept.append(row.unsqueeze(0))
        if not kept:
            return survivors.new_zeros(0, length)
        return torch.cat(kept)[:wanted]
