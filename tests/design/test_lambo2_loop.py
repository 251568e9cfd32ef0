"""The multi-round LaMBO-2 loop: improvement, no repeats, resume, failures, several objectives, bad input."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from cortex.design.acquisition import DesignObjective
from cortex.design.lambo2 import LaMBO2Config
from cortex.design.loop import DesignLoop, DesignLoopConfig, _pareto_ranks
from cortex.design.surrogate import SurrogateSettings
from cortex.errors import DesignError
from tests.design.conftest import ALPHABET, LENGTH, tiny_tree

TARGET = torch.tensor([0, 1, 2, 3, 4, 0, 1])  # "ACDEFAC"


class Assay:
    """A closed-form black box that logs every row it is sent.

    value = matches to TARGET; -inf when state 4 directly follows state 3 at a position other than
    3->4 of the target (an infeasible transition); optionally raises or returns NaN for some rows.
    """

    def __init__(self, raise_on_first: int | None = None, nan_on_second: int | None = None, objectives: int = 1):
        self.sent: list[tuple[int, ...]] = []
        self.raise_on_first, self.nan_on_second, self.objectives = raise_on_first, nan_on_second, objectives

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.sent.extend(tuple(r) for r in x.tolist())
        if self.raise_on_first is not None and bool((x[:, 0] == self.raise_on_first).any()):
            raise RuntimeError("the assay robot jammed")
        value = (x == TARGET).sum(-1).double()
        bad = ((x[:, :-1] == 4) & (x[:, 1:] == 0)).any(-1)
        value = torch.where(bad, torch.full_like(value, -math.inf), value)
        if self.nan_on_second is not None:
            value = torch.where(x[:, 1] == self.nan_on_second, torch.full_like(value, math.nan), value)
        if self.objectives == 2:  # conflicting: matches on the first half vs state 2 anywhere
            second = (x == 2).sum(-1).double()
            first = (x[:, :4] == TARGET[:4]).sum(-1).double()
            return torch.stack([torch.where(bad, -math.inf, first), torch.where(bad, -math.inf, second)], -1)
        return value


def seeds(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Feasible random seeds with at most two matches to the target (room to improve)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(len(ALPHABET), (8 * n, LENGTH), generator=g)
    ok = ((x == TARGET).sum(-1) <= 2) & ~((x[:, :-1] == 4) & (x[:, 1:] == 0)).any(-1)
    return x[ok][:n]


def small_config(**overrides) -> DesignLoopConfig:
    settings = dict(
        batch_size=8, rounds=4, num_chains=16, num_parents=4,
        lambo=LaMBO2Config(num_steps=2, num_mutations=2, guidance_steps=2),
        surrogate=SurrogateSettings(initial_steps=100, finetune_steps=15, batch_size=32),
    )
    settings.update(overrides)
    return DesignLoopConfig(**settings)


def make_loop(assay, tmp_path=None, config=None, objectives=("value",), **kwargs) -> DesignLoop:
    tree = tiny_tree(objectives=objectives, feasibility_leaf="feasible")
    objective = DesignObjective(objectives=objectives, constraints=("feasible",))
    return DesignLoop(tree, objective, assay, alphabet=ALPHABET, length=LENGTH, config=config or small_config(),
                      history_path=None if tmp_path is None else tmp_path / "history.parquet", **kwargs)


def test_end_to_end_improves_over_seeds_and_never_resends(tmp_path):
    assay = Assay()
    loop = make_loop(assay, tmp_path, feasibility_fn=lambda x: x[:, 0] != 3)  # a known rule on proposals
    start = seeds()
    result = loop.run(start)
    seed_best = float(Assay()(start).max())
    assert result.best_value > seed_best
    assert len(assay.sent) == len(set(assay.sent)) == result.evaluations
    proposals = torch.tensor(assay.sent)[len(start):]
    assert len(proposals) and (proposals[:, 0] != 3).all()
    assert [r.round for r in result.rounds] == [0, 1, 2, 3, 4]
    frame = pd.read_parquet(tmp_path / "history.parquet")
    assert len(frame) == result.evaluations and set(frame["round"]) == {0, 1, 2, 3, 4}
    assert frame.loc[frame["round"] > 0, "acquisition"].notna().all()


def test_mutable_positions_never_change_in_proposals():
    assay = Assay()
    mutable = torch.tensor([False, True, True, False, True, True, False])
    loop = make_loop(assay, is_mutable=mutable, config=small_config(rounds=2))
    start = seeds(8, seed=3)
    loop.run(start)
    sent = torch.tensor(assay.sent)[len(start):]
    frozen = ~mutable
    # every proposal descends from a seed, so each frozen column only holds values some seed had there
    for col in torch.nonzero(frozen).flatten().tolist():
        assert set(sent[:, col].tolist()) <= set(start[:, col].tolist())


def test_a_killed_run_resumes_without_resending(tmp_path):
    assay = Assay()
    loop = make_loop(assay, tmp_path, config=small_config(rounds=2))
    first = loop.run(seeds())
    assert first.rounds[-1].round == 2
    # a new process: same history file, same seeds passed again
    again = make_loop(assay, tmp_path, config=small_config(rounds=2))
    second = again.run(seeds())
    assert [r.round for r in second.rounds] == [3, 4]
    assert len(assay.sent) == len(set(assay.sent)) == second.evaluations
    frame = pd.read_parquet(tmp_path / "history.parquet")
    assert frame["round"].max() == 4 and len(frame) == second.evaluations


def test_budget_is_never_exceeded_and_is_spent():
    assay = Assay()
    loop = make_loop(assay, config=small_config(rounds=None, budget=30))
    result = loop.run(seeds())
    assert result.evaluations <= 30 and len(assay.sent) == result.evaluations
    assert result.rounds[-1].evaluations == result.evaluations


def test_failures_are_recorded_and_the_run_goes_on():
    assay = Assay(raise_on_first=2, nan_on_second=3)
    loop = make_loop(assay, config=small_config(rounds=3))
    start = seeds(16, seed=5)
    result = loop.run(start)
    failed = [r for r in result.black_box.history if r.failed]
    assert failed, "the toy seeds include rows the assay fails on"
    assert all(math.isnan(r.value) and r.error for r in failed)
    assert any("jammed" in r.error for r in failed) and any("NaN" in r.error for r in failed)
    assert result.rounds[-1].round == 3
    assert not torch.isnan(loop.data().values[~loop.data().failed]).any()


def test_multi_objective_run_returns_a_non_dominated_set(tmp_path):
    assay = Assay(objectives=2)
    loop = make_loop(assay, tmp_path, config=small_config(rounds=3), objectives=("match", "twos"))
    result = loop.run(seeds(12, seed=1))
    values = result.pareto_values
    assert len(values) >= 1 and values.shape[1] == 2
    for i in range(len(values)):
        for j in range(len(values)):
            dominates = bool((values[j] >= values[i]).all() and (values[j] > values[i]).any())
            assert not dominates, f"{values[j].tolist()} dominates {values[i].tolist()}"
    everything = loop.data().values[loop.data().feasible]
    for v in everything:  # every feasible design is weakly dominated by the front
        assert bool(((values >= v).all(-1)).any())
    frame = pd.read_parquet(tmp_path / "history.parquet")
    assert "objectives" in frame.columns and len(frame["objectives"].iloc[0]) == 2


def test_pareto_ranks_closed_form():
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.4, 0.4], [0.0, 0.0], [1.0, 0.0]])
    assert _pareto_ranks(values).tolist() == [0, 0, 0, 1, 2, 0]
    assert _pareto_ranks(torch.tensor([[3.0], [1.0], [3.0], [2.0]])).tolist() == [0, 2, 0, 1]


def test_bad_inputs_raise_clear_errors(tmp_path):
    assay = Assay()
    loop = make_loop(assay)
    with pytest.raises(DesignError, match="length"):
        loop.run(torch.ones(4, LENGTH + 1, dtype=torch.long))
    with pytest.raises(DesignError, match="not in the alphabet"):
        loop.run(["ACDEFAZ"])
    with pytest.raises(DesignError, match="outside 0..4"):
        loop.run(torch.full((2, LENGTH), 9))
    with pytest.raises(DesignError, match="Neither rounds nor budget"):
        DesignLoopConfig(rounds=None, budget=None)
    with pytest.raises(DesignError, match="allows no position"):
        make_loop(assay, is_mutable=torch.zeros(LENGTH, dtype=torch.bool))
    with pytest.raises(DesignError, match="names no leaf"):
        DesignLoop(tiny_tree(), DesignObjective(objectives=("stability",)), assay, alphabet=ALPHABET, length=LENGTH,
                   config=small_config())
    with pytest.raises(DesignError, match="return \\[4\\]"):
        make_loop(lambda x: torch.zeros(len(x), 3)).run(seeds(4))
    with pytest.raises(DesignError, match="No evaluated design is feasible"):
        make_loop(lambda x: torch.full((len(x),), -math.inf)).run(seeds(4))
    with pytest.raises(DesignError, match="not callable"):
        make_loop(42)
