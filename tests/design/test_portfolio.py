"""The offspring source (genetic-algorithm children of the elite) and the adaptive portfolio of sources."""

from __future__ import annotations

import pytest
import torch

from cortex.design.lambo2 import LaMBO2Config
from cortex.design.loop import DesignLoopConfig
from cortex.design.proposals import elite, offspring
from cortex.errors import DesignError


def test_elite_takes_the_best_and_breaks_ties_at_random():
    values = torch.tensor([0.1, 0.5, 0.5, 0.5, 0.9, 0.2])
    picks = set()
    for seed in range(40):
        top = elite(values, 2, torch.Generator().manual_seed(seed)).tolist()
        assert top[0] == 4 and top[1] in (1, 2, 3)
        picks.add(top[1])
    assert picks == {1, 2, 3}  # every equally good design gets its turn


def test_offspring_keep_immutable_positions_and_mix_only_parent_states():
    g = torch.Generator().manual_seed(0)
    parents = torch.tensor([[0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    mutable = torch.tensor([True, True, False, True, True, True])
    kids, first = offspring(parents, 500, mutable, 6, mutation_prob=0.0, crossover_prob=0.5, generator=g)
    assert kids.shape == (500, 6) and first.shape == (500,)
    assert bool((kids[:, 2] == parents[first, 2]).all())  # immutable: the first parent's state
    assert bool((kids <= 1).all())  # no mutation: only parent states
    assert bool((kids != parents[first]).any())  # crossover happened
    mutated, first = offspring(parents, 500, mutable, 6, mutation_prob=0.5, crossover_prob=0.0, generator=g)
    assert bool((mutated[:, 2] == parents[first, 2]).all())
    assert bool((mutated > 1).any())
    changed = (mutated != parents[first]).float()[:, mutable].mean()
    assert 0.35 < float(changed) < 0.5  # each mutable position redrawn with p = 0.5 (a redraw may repeat)


@pytest.mark.parametrize("portfolio", ["fixed", "adaptive"])
def test_offspring_source_never_resends_and_never_sends_a_forbidden_pair(portfolio):
    from tests.design.test_lambo2_loop import Assay, make_loop, seeds, small_config

    assay = Assay()
    config = small_config(rounds=5, trust_region_fraction=0.5, evolution_fraction=0.5, portfolio=portfolio,
                          portfolio_window=2, evolution_rank="acquisition", fit_every=1 if portfolio == "adaptive" else 2,
                          lambo=LaMBO2Config(num_steps=1, num_mutations=1, edit_window=2, decoder="joint",
                                             guidance_steps=2))
    loop = make_loop(assay, config=config)
    start = seeds()
    forbidden_sent = []
    original = loop.black_box.evaluate

    def evaluate(states, **kwargs):
        # every design sent after the seeds must be free of the pairs the support forbade before it was sent
        forbidden_sent.extend(bool(v) for v in ~loop.support.plausible(states))
        return original(states, **kwargs)

    loop.black_box.evaluate = evaluate
    result = loop.run(start)
    assert result.best_value > float(Assay()(start).max())
    assert len(assay.sent) == len(set(assay.sent)) == result.evaluations
    assert loop.proposal_sources.get("evolution", 0) > 0
    assert not any(forbidden_sent)
    assert len(loop.source_record) == 5
    fitted = [r.fit is not None for r in result.rounds[1:]]
    assert fitted == ([True] * 5 if portfolio == "adaptive" else [True, False, True, False, True])
    sent = sum(r.get("evolution", (0, 0))[0] + r.get("trust_region", (0, 0))[0] for r in loop.source_record)
    assert sent == result.evaluations - len(start)


def test_adaptive_shares_follow_the_win_rates():
    from tests.design.test_lambo2_loop import Assay, make_loop, small_config

    config = small_config(trust_region_fraction=0.5, evolution_fraction=0.5, portfolio="adaptive",
                          portfolio_window=2, portfolio_min_share=0.1)
    loop = make_loop(Assay(), config=config)
    assert loop.shares(20) == {"trust_region": 10, "crossover": 0, "evolution": 10}  # no record: even
    loop.source_record = [{"trust_region": [10, 0], "evolution": [10, 8]}] * 3
    # rates 1/12 and 9/12 -> split 0.1 / 0.9
    assert loop.win_rate("evolution") == pytest.approx(17 / 22)
    share = loop.shares(20)
    assert share["evolution"] > share["trust_region"] >= 2 and share["evolution"] + share["trust_region"] == 20
    loop.source_record = [{"trust_region": [10, 10], "evolution": [10, 0]}] * 2
    assert loop.shares(20)["trust_region"] >= 16


def test_bad_portfolio_settings_are_refused():
    with pytest.raises(DesignError, match="exceeds 1"):
        DesignLoopConfig(rounds=1, trust_region_fraction=0.6, evolution_fraction=0.6)
    with pytest.raises(DesignError, match="evolution_rank"):
        DesignLoopConfig(rounds=1, evolution_rank="best")
    with pytest.raises(DesignError, match="portfolio"):
        DesignLoopConfig(rounds=1, portfolio="bandit")
    with pytest.raises(DesignError, match="evolution_elite"):
        DesignLoopConfig(rounds=1, evolution_elite=0)


def test_elite_ties_go_to_the_newest():
    values = torch.tensor([0.5, 0.5, 0.5, 0.9, 0.5])
    age = torch.tensor([3, 0, 2, 5, 0])
    for seed in range(10):
        top = elite(values, 3, torch.Generator().manual_seed(seed), age=age).tolist()
        assert top[0] == 3 and set(top[1:]) == {1, 4}
