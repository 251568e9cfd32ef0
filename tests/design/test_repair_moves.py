"""Repair moves: the learned transition support, joint decoding, window edits, the trust region, parents."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from cortex.design.lambo2 import LaMBO2, LaMBO2Config
from cortex.design.proposals import crossover, farthest_first, trust_region
from cortex.design.transitions import TransitionSupport, joint_decode, window_mask
from cortex.errors import DesignError


def test_support_allows_seen_pairs_and_blames_the_only_new_pair():
    support = TransitionSupport(4, unseen_prob=0.1)
    support.update(torch.tensor([[0, 1, 2], [2, 3, 3]]), torch.tensor([True, True]))
    assert support.allowed[0, 1] and support.allowed[1, 2] and support.allowed[2, 3] and support.allowed[3, 3]
    # infeasible with one not-allowed pair (1 -> 0): that pair is blamed
    support.update(torch.tensor([[0, 1, 0]]), torch.tensor([False]))
    assert support.forbidden[1, 0]
    # infeasible with two not-allowed pairs (3 -> 1, 1 -> 3): neither can be blamed yet
    support.update(torch.tensor([[2, 3, 1, 3]]), torch.tensor([False]))
    assert not support.forbidden[3, 1] and not support.forbidden[1, 3]
    # once 1 -> 3 shows up in a feasible design, 3 -> 1 is the only suspect left
    support.update(torch.tensor([[0, 1, 3]]), torch.tensor([True]))
    assert support.forbidden[3, 1] and not support.forbidden[1, 3]
    w = support.log_weights()
    assert w[0, 1] == 0.0 and w[1, 0] == -math.inf and w[0, 0] == pytest.approx(math.log(0.1))


def test_joint_decoder_samples_each_run_with_its_exact_probability():
    # V = 3; position 0 fixed to 0, positions 1-2 masked, position 3 fixed to 2
    w = torch.tensor([[1.0, 0.5, 0.0],
                      [0.2, 1.0, 1.0],
                      [1.0, 0.0, 0.3]])
    p1 = torch.tensor([0.5, 0.3, 0.2])
    p2 = torch.tensor([0.1, 0.6, 0.3])
    expected = torch.zeros(3, 3)
    for a, b in itertools.product(range(3), range(3)):
        expected[a, b] = p1[a] * p2[b] * w[0, a] * w[a, b] * w[b, 2]
    expected /= expected.sum()
    n = 40_000
    log_probs = torch.full((n, 4, 3), -5.0)  # fixed positions' emissions are never read
    log_probs[:, 1] = p1.log()
    log_probs[:, 2] = p2.log()
    masked = torch.tensor([False, True, True, False]).expand(n, -1)
    states = torch.tensor([0, 1, 1, 2]).expand(n, -1)
    out, ok = joint_decode(log_probs, masked, states, w.log(), torch.Generator().manual_seed(0))
    assert bool(ok.all())
    assert bool((out[:, 0] == 0).all()) and bool((out[:, 3] == 2).all())
    pairs = out[:, :-1] * 3 + out[:, 1:]
    assert bool((w.flatten()[pairs] > 0).all())  # never a pair outside the support
    counts = torch.zeros(9).index_add_(0, out[:, 1] * 3 + out[:, 2], torch.ones(n)).reshape(3, 3) / n
    assert torch.allclose(counts, expected, atol=0.01)
    assert bool((counts[expected == 0] == 0).all())


def test_joint_decoder_falls_back_when_nothing_bridges():
    w = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).log()  # nothing may be followed by state 0
    log_probs = torch.zeros(2, 3, 2)
    masked = torch.tensor([[False, True, False], [True, False, False]])
    states = torch.tensor([[1, 1, 0], [0, 1, 1]])
    out, ok = joint_decode(log_probs, masked, states, w)
    # row 0: the fixed 0 at the end cannot follow anything; row 1: the run [?] -> 1 is bridged by 0 or 1
    assert ok.tolist() == [False, True]
    assert out[1, 1:].tolist() == [1, 1] and out[0, [0, 2]].tolist() == [1, 0]


def test_window_mask_respects_mutable_positions_and_width():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 10, generator=g)
    allowed = torch.ones(64, 10, dtype=torch.bool)
    allowed[:, 4] = False
    mask = window_mask(scores, allowed, num_windows=1, width=3, generator=g)
    assert not bool(mask[:, 4].any())
    assert bool((mask.sum(-1) <= 3).all()) and bool((mask.sum(-1) >= 1).all())
    for row in mask:  # one window: the chosen positions are contiguous apart from the immutable hole
        idx = torch.nonzero(row).flatten()
        assert int(idx.max() - idx.min()) <= 2


def test_window_edits_respect_mutable_mask_and_max_edits(trained_toy):
    tree, _ = trained_toy
    from cortex.design.acquisition import DesignObjective
    from tests.design.conftest import ALPHABET, LENGTH

    config = LaMBO2Config(num_steps=3, num_mutations=1, edit_window=3, guidance_steps=2, max_edits=2,
                          decoder="joint")
    lambo = LaMBO2(tree, DesignObjective(objectives=("value",)), alphabet=ALPHABET, config=config, seed=0)
    support = TransitionSupport(len(ALPHABET))
    g = torch.Generator().manual_seed(1)
    support.update(torch.randint(len(ALPHABET), (50, LENGTH), generator=g), torch.ones(50, dtype=torch.bool))
    lambo.support = support
    seeds = torch.randint(len(ALPHABET), (12, LENGTH), generator=g)
    mutable = torch.ones(LENGTH, dtype=torch.bool)
    mutable[[0, 3]] = False
    result = lambo.optimize(seeds, is_mutable=mutable)
    for cands, feasible, chain in ((result.candidates, result.candidate_feasible, result.candidate_chain),):
        origin = seeds[chain]
        assert bool((cands[:, ~mutable] == origin[:, ~mutable]).all())
        assert bool(((cands != origin).sum(-1)[feasible] <= 2).all())
    assert bool(((result.states != seeds).sum(-1) <= 2).all())


def test_trust_region_never_proposes_a_history_sequence():
    g = torch.Generator().manual_seed(0)
    V, L = 5, 6
    support = TransitionSupport(V)
    history = torch.randint(V, (40, L), generator=g)
    support.update(history, torch.rand(40, generator=g) > 0.3)
    parents = history[:3]
    # the history also holds part of the parents' neighbourhoods
    near = parents[0].repeat(8, 1)
    near[torch.arange(8), torch.arange(8) % L] = (near[torch.arange(8), torch.arange(8) % L] + 1) % V
    history = torch.cat([history, near])
    seen_keys = {tuple(r) for r in history.tolist()}

    def seen(x):
        return torch.tensor([tuple(r) in seen_keys for r in x.tolist()])

    mutable = torch.ones(L, dtype=torch.bool)
    mutable[2] = False
    cands, owner = trust_region(parents, mutable, support, seen, generator=g)
    assert len(cands) > 0
    assert not any(tuple(r) in seen_keys for r in cands.tolist())
    assert len({tuple(r) for r in cands.tolist()}) == len(cands)
    assert bool((cands[:, 2] == parents[owner][:, 2]).all())  # immutable position untouched
    assert bool(((cands != parents[owner]).sum(-1) <= 2).all())  # singles and repaired doubles only
    assert bool(support.plausible(cands).all())


def test_crossover_children_join_two_parents_with_allowed_junctions():
    g = torch.Generator().manual_seed(0)
    support = TransitionSupport(4)
    parents = torch.randint(4, (5, 12), generator=g)
    support.update(parents, torch.ones(5, dtype=torch.bool))
    children = crossover(parents, 20, torch.ones(12, dtype=torch.bool), support, window=1, generator=g)
    assert len(children) > 0 and bool(support.plausible(children).all())


def _farthest_first_brute_force(states, n):
    """Greedy max-min Hamming selection written out over all pairs, earliest index on ties."""
    def hamming(a, b):
        return sum(int(x != y) for x, y in zip(a, b))

    rows = states.tolist()
    chosen = [0]
    while len(chosen) < min(n, len(rows)):
        best, best_d = None, -1
        for i in range(len(rows)):
            if i in chosen:
                continue
            d = min(hamming(rows[i], rows[j]) for j in chosen)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_farthest_first_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    states = torch.randint(3, (9, 5), generator=g)
    for n in (1, 3, 5, 9, 12):
        assert farthest_first(states, n).tolist() == _farthest_first_brute_force(states, n)


def test_bad_settings_are_refused():
    with pytest.raises(DesignError, match="decoder"):
        LaMBO2Config(decoder="greedy")
    with pytest.raises(DesignError, match="edit_window"):
        LaMBO2Config(edit_window=0)
    with pytest.raises(DesignError, match="unseen_prob"):
        TransitionSupport(4, unseen_prob=0.0)


@pytest.mark.parametrize("rank", ["acquisition", "random"])
def test_trust_region_loop_improves_and_never_resends(rank):
    from tests.design.test_lambo2_loop import Assay, make_loop, seeds, small_config

    assay = Assay()
    config = small_config(trust_region_fraction=0.75, parent_selection="diverse", trust_region_rank=rank,
                          lambo=LaMBO2Config(num_steps=1, num_mutations=1, edit_window=2, decoder="joint",
                                             guidance_steps=2))
    loop = make_loop(assay, config=config)
    start = seeds()
    result = loop.run(start)
    assert result.best_value > float(Assay()(start).max())
    assert len(assay.sent) == len(set(assay.sent)) == result.evaluations
    assert loop.proposal_sources.get("trust_region", 0) > 0
    assert bool(loop.support.allowed.any())
