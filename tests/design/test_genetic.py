"""The GA baseline and random search under a black-box budget."""

from __future__ import annotations

import math

import pytest
import torch

from cortex.design import BlackBox, Ehrlich, GeneticAlgorithm, GeneticConfig, random_search
from cortex.errors import DesignError


def problem(seed: int) -> Ehrlich:
    return Ehrlich(num_states=11, dim=23, num_motifs=3, motif_length=4, quantization=4, random_seed=seed)


class Logged:
    """Wraps a black box and logs every sequence it is sent."""

    def __init__(self, fn):
        self.fn, self.sent = fn, []

    def __call__(self, x):
        self.sent.extend(map(tuple, x.tolist()))
        return self.fn(x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ga_improves_on_its_initial_population_and_never_resends(seed):
    f = problem(seed)
    logged = Logged(f)
    bb = BlackBox(logged, length=f.dim, num_states=f.num_states, budget=700)
    initial = f.random_feasible(13, seed=seed)
    initial_best = f(initial).max().item()
    assert initial_best < 1.0
    result = GeneticAlgorithm(GeneticConfig(population_size=17, survival_quantile=0.25)).run(bb, initial, seed=seed)
    assert result.best_value > initial_best
    assert result.stop_reason == "budget" and result.evaluations == bb.evaluations == 700
    assert len(logged.sent) == len(set(logged.sent)) == 700  # every evaluation is a new sequence
    assert result.best_value == bb.best()[1] == f(result.best_states[None]).item()
    rounds = [r.round for r in bb.history]
    assert rounds[:13] == [0] * 13 and rounds == sorted(rounds) and result.generations == rounds[-1]


def test_ga_is_deterministic_by_seed():
    f = problem(4)
    runs = []
    for _ in range(2):
        bb = BlackBox(f, length=f.dim, num_states=f.num_states, budget=200)
        GeneticAlgorithm().run(bb, f.random_feasible(7, seed=0), seed=5)
        runs.append(bb.states_tensor())
    assert torch.equal(runs[0], runs[1])


def test_ga_survives_failing_candidates():
    f = problem(1)

    def flaky(x):
        if (x[:, :2] == 3).any():  # candidates starting with a 3 crash the assay
            raise RuntimeError("instrument error")
        return f(x)

    bb = BlackBox(flaky, length=f.dim, num_states=f.num_states, budget=300)
    result = GeneticAlgorithm(GeneticConfig(population_size=11)).run(bb, f.random_feasible(11, seed=2), seed=0)
    failed = [r for r in bb.history if r.failed]
    assert failed and all(3 in r.states[:2] for r in failed)
    assert bb.evaluations == 300 and math.isfinite(result.best_value)


def test_ga_stops_at_max_generations_and_needs_a_bound():
    f = problem(2)
    bb = BlackBox(f, length=f.dim, num_states=f.num_states)
    config = GeneticConfig(population_size=9, survival_quantile=0.3, max_generations=3)
    result = GeneticAlgorithm(config).run(bb, f.random_feasible(9, seed=0))
    assert result.stop_reason == "max_generations" and result.generations == 3
    assert bb.evaluations == 9 + 3 * (9 - config.num_survivors)
    with pytest.raises(DesignError, match="budget"):
        GeneticAlgorithm().run(BlackBox(f, length=f.dim, num_states=f.num_states), f.random_feasible(3))


def test_ga_stops_when_no_new_children_exist():
    # 2 states, length 3: only 8 sequences exist, so the GA runs out of new children
    bb = BlackBox(lambda x: x.sum(-1).double(), length=3, num_states=2, budget=50)
    result = GeneticAlgorithm(GeneticConfig(population_size=4, survival_quantile=0.5)).run(
        bb, torch.tensor([[0, 0, 0], [0, 1, 0]]), seed=1
    )
    assert result.stop_reason == "no_new_children" and bb.evaluations <= 8
    assert result.best_value == 3.0


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(population_size=1), "population_size"),
        (dict(survival_quantile=1.0), "survival_quantile"),
        (dict(population_size=3, survival_quantile=0.9), "survival_quantile"),
        (dict(mutation_prob=1.5), "mutation_prob"),
        (dict(crossover_prob=-0.1), "crossover_prob"),
        (dict(max_generations=0), "max_generations"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(DesignError, match=field):
        GeneticConfig(**kwargs)


def test_random_search_spends_the_budget_on_new_sequences():
    f = problem(3)
    logged = Logged(f)
    bb = BlackBox(logged, length=f.dim, num_states=f.num_states, budget=77)
    best_states, best_value = random_search(bb, lambda n, g: f.random_feasible(n, seed=g), batch_size=13, seed=0)
    assert bb.evaluations == 77 and len(set(logged.sent)) == 77
    assert best_value == max(r.value for r in bb.history) == f(best_states[None]).item()
