"""LaMBO-2 guided steps: acquisition maths, saliency, edit positions, acceptance, constraints, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from cortex.design.acquisition import DesignObjective, EnsembleAcquisition
from cortex.design.lambo2 import LaMBO2, LaMBO2Config
from cortex.errors import DesignError
from tests.design.conftest import ALPHABET, LENGTH, MATTER, tiny_tree, toy_value


# ----------------------------------------------------------------------------------- acquisition
def test_log_ei_matches_closed_form_for_clear_improvements():
    # far above best_f the smoothed improvement is the plain one: log mean_e (y_e - best_e)
    baseline = torch.tensor([[[0.0], [1.0]], [[2.0], [0.5]], [[1.5], [1.0]]])  # (E=3, N=2, 1); best_f = 1, 2, 1.5
    acq = EnsembleAcquisition(DesignObjective(objectives=("value",)), baseline)
    samples = torch.tensor([[[5.0], [3.0]], [[4.0], [7.0]], [[2.5], [11.0]]])  # (E, B=2, 1)
    best = torch.tensor([1.0, 2.0, 1.5])[:, None]
    expected = torch.log((samples[..., 0] - best).mean(0))
    assert torch.allclose(acq.from_samples(samples), expected.float(), atol=1e-4)
    # classifier probabilities multiply each member's improvement
    p = torch.tensor([[0.5, 0.25], [1.0, 0.5], [0.2, 0.8]])
    expected_c = torch.log(((samples[..., 0] - best) * p).mean(0))
    assert torch.allclose(acq.from_samples(samples, p.log()), expected_c.float(), atol=1e-4)


def test_log_ei_is_monotone_and_differentiable_below_best():
    baseline = torch.tensor([[[1.0]], [[1.0]]])
    acq = EnsembleAcquisition(DesignObjective(objectives=("value",)), baseline)
    y = torch.tensor([[[-3.0], [-1.0], [0.5]], [[-3.0], [-1.0], [0.5]]], requires_grad=True)
    value = acq.from_samples(y)
    assert value[0] < value[1] < value[2]  # all below best_f, still ordered (LogEI's point)
    value.sum().backward()
    assert torch.all(y.grad > 0)


def test_ehvi_rewards_points_beyond_the_front():
    baseline = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])  # (E=1, N=3, M=2)
    acq = EnsembleAcquisition(DesignObjective(objectives=("a", "b")), baseline)
    samples = torch.tensor([[[1.2, 1.2], [0.4, 0.4], [0.9, 0.9]]])
    value = acq.from_samples(samples)
    assert value[0] > value[2] > value[1]


def test_objective_errors_name_the_leaf():
    tree = tiny_tree()
    with pytest.raises(DesignError, match="'missing' names no leaf"):
        DesignObjective(objectives=("missing",)).validate(tree)
    with pytest.raises(DesignError, match="regressor"):
        DesignObjective(objectives=("mlm",)).validate(tree)
    with pytest.raises(DesignError, match="not objectives"):
        DesignObjective(objectives=("value",), minimize=("other",))
    with pytest.raises(DesignError, match="empty"):
        DesignObjective(objectives=())


# ----------------------------------------------------------------------------------- saliency
@pytest.mark.parametrize("points", [0, 3])
def test_saliency_is_gradient_times_mask_minus_token(trained_toy, points):
    tree, trained = trained_toy
    lambo = LaMBO2(tree, trained.objective, alphabet=ALPHABET,
                   config=LaMBO2Config(saliency="gradient", saliency_path_points=points))
    states = torch.randint(len(ALPHABET), (5, LENGTH), generator=torch.Generator().manual_seed(3))
    acq = lambo.acquisition(torch.randint(len(ALPHABET), (50, LENGTH), generator=torch.Generator().manual_seed(4)))
    scores = lambo.saliency(states, acq)
    # independently: directional derivatives, one position at a time, at the tokens (points=0) or
    # averaged over the midpoints of the path towards the mask embedding
    emb = tree.embed("sequence", lambo.ids(states)).detach()
    mask = tree.embed("sequence", torch.full((1, 1), lambo.mask_id)).detach()
    ts = [0.0] if points == 0 else [(k + 0.5) / points for k in range(points)]
    for pos in (0, 3, 6):
        direction = torch.zeros_like(emb)
        direction[:, pos] = (mask - emb)[:, pos]
        expected = torch.zeros(len(states))
        for t in ts:
            start = emb + t * (mask - emb)

            def f(s):
                return acq(tree(lambo._inputs(embeds=start + s * direction), leaf_keys=["value"]))

            expected += torch.autograd.functional.jvp(f, torch.zeros(()), torch.ones(()))[1] / len(ts)
        assert torch.allclose(scores[:, pos], expected, atol=1e-4, rtol=1e-3)


def test_occlusion_saliency_is_the_exact_masked_change(trained_toy):
    tree, lambo = trained_toy
    states = torch.randint(len(ALPHABET), (5, LENGTH), generator=torch.Generator().manual_seed(8))
    acq = lambo.acquisition(torch.randint(len(ALPHABET), (50, LENGTH), generator=torch.Generator().manual_seed(4)))
    scores = lambo.saliency(states, acq, allowed=torch.ones(5, LENGTH, dtype=torch.bool))
    ids = lambo.ids(states)
    with torch.no_grad():
        base = acq(tree(lambo._inputs(ids), leaf_keys=["value"]))
        for pos in range(LENGTH):
            masked = ids.clone()
            masked[:, pos] = lambo.mask_id
            assert torch.allclose(scores[:, pos], acq(tree(lambo._inputs(masked), leaf_keys=["value"])) - base, atol=1e-5)


def test_saliency_ranks_the_positions_that_matter_highest(trained_toy):
    tree, lambo = trained_toy
    g = torch.Generator().manual_seed(7)
    states = torch.randint(1, len(ALPHABET), (11, LENGTH), generator=g)  # no 'A' anywhere: both positions wrong
    data = torch.randint(len(ALPHABET), (64, LENGTH), generator=g)  # baseline designs (best_f) as in a design round
    scores = lambo.saliency(states, lambo.acquisition(data))
    top2 = scores.topk(2, dim=-1).indices.sort(-1).values
    hits = (top2 == torch.tensor(MATTER)).all(-1).float().mean()
    assert hits >= 0.9, f"top-2 salient positions {top2.tolist()}"


def test_edit_positions_respect_the_mask_and_budget(trained_toy):
    _, lambo = trained_toy
    scores = torch.randn(13, LENGTH, generator=torch.Generator().manual_seed(1))
    allowed = torch.ones(13, LENGTH, dtype=torch.bool)
    allowed[:, :3] = False
    allowed[0] = False
    allowed[0, 5] = True  # one row with a single allowed position
    chosen = lambo.edit_positions(scores.masked_fill(~allowed, -math.inf), allowed, 2)
    assert not (chosen & ~allowed).any()
    assert chosen[0].sum() == 1 and chosen[1:].sum(-1).eq(2).all()


def test_low_temperature_picks_the_most_salient():
    tree = tiny_tree()
    lambo = LaMBO2(tree, DesignObjective(objectives=("value",)), alphabet=ALPHABET,
                   config=LaMBO2Config(saliency_temperature=1e-3))
    scores = torch.tensor([[0.1, 5.0, 0.2, 0.0, 4.0, -1.0, 0.3]]).expand(5, -1)
    chosen = lambo.edit_positions(scores, torch.ones(5, LENGTH, dtype=torch.bool), 2)
    assert chosen[:, [1, 4]].all() and chosen.sum() == 10


# ----------------------------------------------------------------------------------- steps
def test_a_step_never_accepts_a_worse_sequence(trained_toy):
    _, lambo = trained_toy
    states = torch.randint(len(ALPHABET), (13, LENGTH), generator=torch.Generator().manual_seed(5))
    acq = lambo.acquisition(states)
    current = states
    previous = lambo.score(current, acq)
    for _ in range(3):
        result = lambo.optimize(current, acquisition=acq, num_steps=1)
        assert torch.allclose(result.seed_scores, previous)
        changed = (result.states != current).any(-1)
        assert torch.all(result.scores[changed] > previous[changed])
        assert torch.equal(result.scores[~changed], previous[~changed])
        # each reported score is the clean acquisition of the design it belongs to
        assert torch.allclose(result.scores, lambo.score(result.states, acq), atol=1e-5)
        current, previous = result.states, result.scores


def test_guided_steps_improve_the_toy_objective(trained_toy):
    _, lambo = trained_toy
    seeds = torch.randint(1, len(ALPHABET), (11, LENGTH), generator=torch.Generator().manual_seed(9))
    result = lambo.optimize(seeds, num_steps=3)
    assert toy_value(result.states).mean() > toy_value(seeds).mean() + 0.5


def test_constraints_and_mutable_mask_always_hold(trained_toy):
    tree, _ = trained_toy

    def no_state_two_after_one(x):  # a known feasibility rule on states
        return ~((x[:, :-1] == 1) & (x[:, 1:] == 2)).any(-1) & (x != 3).all(-1)

    lambo = LaMBO2(tree, DesignObjective(objectives=("value",)), alphabet=ALPHABET, feasibility_fn=no_state_two_after_one,
                   config=LaMBO2Config(num_steps=3, num_mutations=3, guidance_steps=3), seed=2)
    seeds = torch.tensor([[4, 2, 0, 4, 1, 4, 0]] * 7)
    mutable = torch.tensor([True, True, False, True, False, True, False])
    result = lambo.optimize(seeds, is_mutable=mutable)
    assert torch.equal(result.candidates[:, ~mutable], seeds[:1, ~mutable].expand(len(result.candidates), -1))
    assert torch.equal(result.states[:, ~mutable], seeds[:, ~mutable])
    assert no_state_two_after_one(result.states).all()
    feasible = result.candidate_feasible
    assert torch.equal(feasible, no_state_two_after_one(result.candidates))
    ranked, _ = result.ranked_candidates()
    assert no_state_two_after_one(ranked).all() and len(torch.unique(ranked, dim=0)) == len(ranked)
    # nothing is accepted when the rule rejects everything
    strict = LaMBO2(tree, DesignObjective(objectives=("value",)), alphabet=ALPHABET,
                    feasibility_fn=lambda x: torch.zeros(len(x), dtype=torch.bool), config=lambo.config)
    assert torch.equal(strict.optimize(seeds).states, seeds)


def test_max_edits_bounds_the_distance_from_the_seed(trained_toy):
    tree, _ = trained_toy
    lambo = LaMBO2(tree, DesignObjective(objectives=("value",)), alphabet=ALPHABET,
                   config=LaMBO2Config(num_steps=4, num_mutations=2, guidance_steps=2, max_edits=1), seed=4)
    seeds = torch.randint(1, len(ALPHABET), (9, LENGTH), generator=torch.Generator().manual_seed(2))
    result = lambo.optimize(seeds)
    assert (result.states != seeds).sum(-1).max() <= 1


# ----------------------------------------------------------------------------------- bad input
def test_bad_seeds_and_masks_raise_clear_errors(trained_toy):
    _, lambo = trained_toy
    with pytest.raises(DesignError, match="outside 0..4"):
        lambo.optimize(torch.full((2, LENGTH), 5))
    with pytest.raises(DesignError, match="not in the alphabet"):
        lambo.optimize(["ACDEFAZ"])
    with pytest.raises(DesignError, match="length"):
        lambo.optimize(["ACDEFAC", "ACD"])
    with pytest.raises(DesignError, match="at most 7"):
        lambo.optimize(torch.zeros(2, LENGTH + 4, dtype=torch.long))
    with pytest.raises(DesignError, match="allows no position"):
        lambo.optimize(torch.zeros(2, LENGTH, dtype=torch.long), is_mutable=torch.zeros(LENGTH, dtype=torch.bool))
    with pytest.raises(DesignError, match="shape"):
        lambo.optimize(torch.zeros(2, LENGTH, dtype=torch.long), is_mutable=torch.ones(3, dtype=torch.bool))
    with pytest.raises(DesignError, match="LongTensor"):
        lambo.optimize(torch.zeros(2, LENGTH))


def test_tree_without_denoising_leaf_is_refused():
    from cortex.models.neural_tree import NeuralTreeConfig, NeuralTreeModel

    cfg = NeuralTreeConfig(
        roots={"sequence": {"kind": "conv1d", "tokenizer": "char", "chars": ALPHABET, "max_len": LENGTH}},
        branches={"value": {"kind": "mlp"}},
        leaves={"value": {"kind": "regressor", "branch": "value"}},
    )
    with pytest.raises(DesignError, match="no denoising_lm leaf"):
        LaMBO2(NeuralTreeModel(cfg), DesignObjective(objectives=("value",)), alphabet=ALPHABET)
    with pytest.raises(DesignError, match="names no leaf"):
        LaMBO2(tiny_tree(), DesignObjective(objectives=("stability",)), alphabet=ALPHABET)
    with pytest.raises(DesignError, match="no token"):
        LaMBO2(tiny_tree(), DesignObjective(objectives=("value",)), alphabet="ACDEW")


@pytest.mark.parametrize("field,value", [("num_steps", 0), ("kl_weight", 1.0), ("saliency_temperature", 0.0),
                                         ("max_edits", 0), ("guidance_lr", -1.0),
                                         ("saliency", "magic")])
def test_config_validates_itself(field, value):
    with pytest.raises(DesignError, match=field):
        LaMBO2Config(**{field: value})



def test_uniform_mix_reaches_states_the_denoising_lm_rules_out(trained_toy):
    tree, _ = trained_toy
    seeds = torch.randint(1, len(ALPHABET), (16, LENGTH), generator=torch.Generator().manual_seed(3))

    def decoded_states(mix: float) -> set[int]:
        lambo = LaMBO2(tree, DesignObjective(objectives=("value",)), alphabet=ALPHABET, seed=1,
                       config=LaMBO2Config(num_steps=2, num_mutations=2, guidance_steps=2, decode_uniform_mix=mix))
        result = lambo.optimize(seeds)
        return set(result.candidates[result.candidates != seeds.repeat(4, 1)].tolist())

    assert decoded_states(1.0) == set(range(len(ALPHABET)))  # uniform decoding draws every state
    with pytest.raises(DesignError, match="decode_uniform_mix"):
        LaMBO2Config(decode_uniform_mix=1.5)
