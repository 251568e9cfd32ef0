"""Ehrlich functions: definition, feasibility, quantization, determinism, parity with holo-bench."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from cortex.design import (
    Ehrlich,
    EhrlichConfig,
    alphabet_tokenizer,
    default_alphabet,
    state_token_ids,
    states_to_strings,
    strings_to_states,
)
from cortex.design.test_functions import banded_square_matrix, is_primitive, stationary_distribution
from cortex.errors import DesignError

# Odd, deliberately mismatched sizes: (num_states, dim, num_motifs, motif_length, quantization)
VARIANTS = [(7, 13, 2, 3, 3), (11, 23, 3, 4, 2), (5, 11, 1, 5, 5), (13, 7, 7, 1, 1), (32, 32, 4, 4, 4)]


def reference_presence(x: list[int], motif: list[int], offsets: list[int], q: int) -> float:
    """h(x) from the paper, by plain loops: best placement's matches, quantized to q levels."""
    k = len(motif)
    best = 0
    for start in range(len(x) - offsets[-1]):
        best = max(best, sum(x[start + o] == a for o, a in zip(offsets, motif)))
    return math.floor(best * q / k) / q


def reference_value(f: Ehrlich, x: list[int]) -> float:
    """f(x) by plain loops: -inf if any transition is forbidden, else the product of responses."""
    if any(f.transition_matrix[a, b] == 0 for a, b in zip(x, x[1:])):
        return -math.inf
    value = 1.0
    for motif, offsets in zip(f.motifs.tolist(), f.offsets.tolist()):
        h = reference_presence(x, motif, offsets, f.levels)
        value *= (1 + f.epistasis_factor * h * (h - 1)) * h
    return value


@pytest.mark.parametrize("variant", VARIANTS)
def test_optimal_solution_scores_one_and_is_feasible(variant):
    v, length, c, k, q = variant
    for seed in (0, 3):
        f = Ehrlich(num_states=v, dim=length, num_motifs=c, motif_length=k, quantization=q, random_seed=seed)
        best = f.optimal_solution()
        assert best.shape == (length,)
        assert f(best.unsqueeze(0)).tolist() == [1.0]
        assert bool(f.is_feasible(best))
        assert reference_value(f, best.tolist()) == 1.0


def test_values_match_loop_reference_with_epistasis():
    f = Ehrlich(num_states=11, dim=23, num_motifs=3, motif_length=4, quantization=4, epistasis_factor=0.7,
                random_seed=5)
    optimum = f.optimal_solution()
    # near-optimal sequences hit every quantization level; chain samples and uniform noise cover the rest
    mutants = optimum.repeat(40, 1)
    g = torch.Generator().manual_seed(0)
    where = torch.rand(mutants.shape, generator=g) < 0.15
    mutants[where] = torch.randint(11, (int(where.sum()),), generator=g)
    x = torch.cat([mutants, f.random_feasible(40, seed=1), f.random_solution(20, seed=2)])
    got = f(x)
    expected = torch.tensor([reference_value(f, row) for row in x.tolist()], dtype=torch.float64)
    assert got.dtype == torch.float64 and got.shape == (100,)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    finite = torch.isfinite(expected)
    assert torch.allclose(got[finite], expected[finite], atol=1e-12)
    assert finite.sum() > 40 and (~finite).sum() > 0


def test_infeasible_transition_scores_minus_infinity():
    f = Ehrlich(num_states=7, dim=13, num_motifs=2, motif_length=3, random_seed=3)
    a, b = (f.transition_matrix == 0).nonzero()[0].tolist()  # a forbidden transition a -> b
    x = f.optimal_solution().clone()
    x[-2:] = torch.tensor([a, b])
    assert not bool(f.is_feasible(x))
    assert f(x.unsqueeze(0)).item() == -math.inf
    assert f.log_likelihood(x.unsqueeze(0)).item() == -math.inf
    negated = Ehrlich(num_states=7, dim=13, num_motifs=2, motif_length=3, random_seed=3, negate=True)
    assert negated(x.unsqueeze(0)).item() == math.inf
    assert negated(f.optimal_solution().unsqueeze(0)).item() == -1.0


@pytest.mark.parametrize("k,q", [(4, 4), (4, 2), (6, 3), (5, 1)])
def test_quantization_levels(k, q):
    f = Ehrlich(num_states=13, dim=2 * k + 3, num_motifs=1, motif_length=k, quantization=q, random_seed=1)
    motif, offsets = f.motifs[0].tolist(), f.offsets[0].tolist()
    filler = min(set(range(13)) - set(motif))  # a state that matches no motif element
    levels = []
    # place only the first m motif elements: no placement can match more than m, placement 0 matches m
    for m in range(k + 1):
        x = torch.full((f.dim,), filler)
        for o, a in zip(offsets[:m], motif[:m]):
            x[o] = a
        h = f.motif_presence(x.unsqueeze(0)).item()
        assert h == math.floor(m * q / k) / q == reference_presence(x.tolist(), motif, offsets, q)
        levels.append(h)
    assert sorted(set(levels)) == [i / q for i in range(q + 1)]  # exactly q + 1 levels, 0 to 1


def test_same_seed_same_function_and_different_seed_differs():
    a = Ehrlich.from_variant("11,23,3,4,2", random_seed=7)
    b = Ehrlich(num_states=11, dim=23, num_motifs=3, motif_length=4, quantization=2, random_seed=7)
    c = Ehrlich.from_variant("11,23,3,4,2", random_seed=8)
    assert torch.equal(a.transition_matrix, b.transition_matrix)
    assert torch.equal(a.motifs, b.motifs) and torch.equal(a.spacings, b.spacings)
    assert torch.equal(a.initial_solution(5), b.initial_solution(5))
    assert torch.equal(a.random_feasible(5, seed=2), b.random_feasible(5, seed=2))
    assert not torch.equal(a.transition_matrix, c.transition_matrix)
    assert a.config.variant == "11,23,3,4,2"


def test_stored_values_from_holo_bench():
    """Expected values computed with holo-bench's own code for the same seeds."""
    f = Ehrlich.from_variant("32,32,4,4,4", random_seed=0)
    assert f.motifs.tolist() == [[10, 17, 13, 30], [14, 21, 28, 13], [14, 28, 13, 16], [26, 6, 7, 24]]
    assert f.spacings.tolist() == [[2, 2, 1], [1, 3, 2], [2, 1, 3], [2, 2, 1]]
    g = Ehrlich(num_states=7, dim=13, num_motifs=2, motif_length=3, quantization=3, random_seed=3)
    assert g.motifs.tolist() == [[1, 5, 3], [4, 2, 0]] and g.spacings.tolist() == [[1, 3], [2, 2]]
    start = g.initial_solution(4)
    assert start.tolist()[0] == [0, 4, 0, 2, 6, 1, 5, 5, 3, 4, 2, 6, 1]
    assert torch.allclose(g(start), torch.tensor([4 / 9, 2 / 9, 1 / 9, 2 / 9], dtype=torch.float64))


def test_transition_matrix_is_banded_sparse_stochastic_and_ergodic():
    f = Ehrlich.from_variant("32,32,4,4,4", random_seed=2)
    matrix, n = f.transition_matrix, 32
    bandwidth = int(0.4 * n)
    assert torch.allclose(matrix.sum(-1), torch.ones(n), atol=1e-6)
    assert bool((matrix >= 0).all()) and bool((matrix.diagonal() > 0).all())
    centers = []
    for i, row in enumerate((matrix > 0).tolist()):
        support = {j for j, ok in enumerate(row) if ok}
        window = lambda c: {(c + d) % n for d in range(-bandwidth, bandwidth + 1)}  # noqa: E731
        # the support is one cyclic window of 2b+1 columns, plus the diagonal (repeats always allowed)
        fits = [c for c in range(n) if window(c) <= support and support - window(c) <= {i}]
        assert len(fits) == 1, f"row {i} is not a cyclic band"
        centers.append(fits[0])
    assert sorted(centers) == list(range(n))  # shuffled rows of one banded matrix: a permutation
    assert int((matrix == 0).sum()) >= n * (n - 2 * bandwidth - 2)
    power = torch.linalg.matrix_power(matrix.double(), (n - 1) ** 2 + 1)  # Wielandt: primitive iff > 0
    assert bool((power > 0).all()) and is_primitive(matrix)
    pi = f.stationary_dist
    assert torch.allclose(pi @ matrix, pi, atol=1e-5) and abs(float(pi.sum()) - 1) < 1e-5


def test_is_primitive_rejects_periodic_and_reducible_chains():
    assert not is_primitive(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # period 2
    assert not is_primitive(torch.eye(3))  # reducible
    assert is_primitive(torch.full((5, 5), 0.2))
    assert banded_square_matrix(7, 1).sum(-1).tolist() == [3.0] * 7
    with pytest.raises(DesignError, match="stationary"):
        stationary_distribution(torch.eye(3))


def test_samples_are_feasible_and_uniform_samples_mostly_not():
    f = Ehrlich.from_variant("32,32,4,4,4", random_seed=1)
    chain = f.random_feasible(64, seed=3)
    assert chain.shape == (64, 32) and bool(f.is_feasible(chain).all())
    assert bool((f(chain) >= 0).all()) and bool((f(chain) <= 1).all())
    assert f.is_feasible(f.random_solution(64, seed=3)).float().mean() < 0.1
    assert f.initial_solution().shape == (32,)


def test_noise_only_touches_feasible_values():
    f = Ehrlich(num_states=7, dim=13, num_motifs=2, motif_length=3, noise_std=0.1, random_seed=3)
    x = torch.cat([f.random_feasible(5, seed=0), f.random_solution(50, seed=0)])
    clean, noisy = f.evaluate_true(x), f(x)
    feasible = torch.isfinite(clean)
    assert not torch.equal(clean[feasible], noisy[feasible])
    assert bool(torch.isinf(noisy[~feasible]).all())
    assert torch.equal(f(x, noise=False), clean)


def test_accepts_batched_shapes_and_whole_floats():
    f = Ehrlich(num_states=7, dim=13, num_motifs=2, motif_length=3, random_seed=3)
    x = f.random_feasible(6, seed=1)
    assert f(x.view(2, 3, 13)).shape == (2, 3)
    assert torch.equal(f(x.double()), f(x))
    assert f(x[0]).shape == ()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_states=7, dim=11, num_motifs=3, motif_length=4), "cannot fit"),
        (dict(num_states=7, dim=13, num_motifs=1, motif_length=3, quantization=5), "quantization"),
        (dict(num_states=7, dim=13, num_motifs=1, motif_length=4, quantization=3), "does not divide"),
        (dict(num_states=1, dim=13), "num_states"),
        (dict(num_states=7, dim=13, epistasis_factor=-1.0), "epistasis_factor"),
        (dict(num_states=7, dim=13, noise_std=float("nan")), "noise_std"),
    ],
)
def test_bad_parameters_raise_value_errors(kwargs, match):
    with pytest.raises(DesignError, match=match) as info:
        Ehrlich(**kwargs)
    assert isinstance(info.value, ValueError)


def test_bad_inputs_and_variants_raise():
    f = Ehrlich(num_states=7, dim=13, num_motifs=2, motif_length=3)
    with pytest.raises(DesignError, match="dim=13"):
        f(torch.zeros(2, 12, dtype=torch.long))
    with pytest.raises(DesignError, match="outside"):
        f(torch.full((2, 13), 7))
    with pytest.raises(DesignError, match="non-integer"):
        f(torch.full((2, 13), 0.5))
    with pytest.raises(DesignError, match="five integers"):
        EhrlichConfig.from_variant("32,32,4")


def test_string_round_trip_and_tokenizer_ids():
    assert default_alphabet(20) == "ACDEFGHIKLMNPQRSTVWY"
    assert default_alphabet(32) == "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"
    with pytest.raises(DesignError, match="alphabet"):
        default_alphabet(53)
    f = Ehrlich.from_variant("32,32,4,4,4", random_seed=0)
    x = f.random_feasible(3, seed=0)
    strings = f.to_strings(x)
    assert all(len(s) == 32 for s in strings) and torch.equal(f.from_strings(strings), x)
    tokenizer = alphabet_tokenizer(f.alphabet)
    ids = state_token_ids(tokenizer, f.alphabet)
    assert ids.tolist() == [5 + i for i in range(32)]  # sorted alphabet: state i is token 5 + i
    encoded = tokenizer(strings[0], add_special_tokens=False)["input_ids"]
    assert encoded == (x[0] + 5).tolist()
    assert states_to_strings(torch.tensor([[0, 4, 19]]), default_alphabet(20)) == ["AFY"]
    with pytest.raises(DesignError, match="'B'"):
        strings_to_states(["ACB"], default_alphabet(20))
    with pytest.raises(DesignError, match="length"):
        strings_to_states(["AC", "ACD"], default_alphabet(20))


def test_every_small_motif_combination_reachable():
    """Exhaustive check on a tiny instance: the maximum over all feasible sequences is exactly 1.0."""
    f = Ehrlich(num_states=3, dim=5, num_motifs=1, motif_length=2, random_seed=0)
    x = torch.tensor(list(itertools.product(range(3), repeat=5)))
    values = f(x)
    assert values.max().item() == 1.0
    assert set(values[torch.isfinite(values)].tolist()) <= {0.0, 0.5, 1.0}
