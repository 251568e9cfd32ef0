"""The discrete Markov process (DMP) behind Ehrlich feasibility: banded-sparse ergodic transitions.

An Ehrlich function calls a sequence feasible when every transition ``x[t] -> x[t+1]`` has non-zero
probability under a random transition matrix whose rows are cyclic bands (shuffled), so about a
fifth of all transitions are forbidden. The matrix is checked to be ergodic, so a feasible sequence
of any length exists from every state and the chain has a unique stationary distribution.

The random calls (and their order) follow pytorch-holo's ``holo.test_functions.elemental``, so a
given ``torch.Generator`` state yields the same matrix, motifs and samples as holo-bench.
"""

from __future__ import annotations

import math

import torch

from cortex.errors import DesignError


def banded_square_matrix(num_states: int, bandwidth: int) -> torch.Tensor:
    """A 0/1 matrix ``[n, n]`` whose row ``i`` is 1 on columns ``i-b .. i+b`` (wrapping around)."""
    offsets = torch.arange(-bandwidth, bandwidth + 1)
    rows = torch.arange(num_states).unsqueeze(1)  # (n, 1)
    matrix = torch.zeros(num_states, num_states)
    matrix.scatter_(1, (rows + offsets) % num_states, 1.0)
    return matrix


def is_primitive(transition_matrix: torch.Tensor) -> bool:
    """Whether a stochastic matrix is ergodic (irreducible and aperiodic, i.e. primitive).

    Uses Wielandt's bound: a non-negative ``n x n`` matrix is primitive iff ``P^m > 0`` entrywise for
    ``m = (n-1)^2 + 1``. The power is taken on the 0/1 support by repeated squaring, so the answer is
    exact (holo multiplies floats ``m`` times, where tiny entries could in principle underflow).
    """
    n = transition_matrix.shape[0]
    support = (transition_matrix > 0).to(torch.float64)
    power = (n - 1) ** 2 + 1
    result = torch.eye(n, dtype=torch.float64)
    base = support
    while power:
        if power & 1:
            result = (result @ base).clamp_(max=1.0)  # clamp keeps entries 0/1: reachability only
        base = (base @ base).clamp_(max=1.0)
        power >>= 1
    return bool((result > 0).all())


def sample_sparse_ergodic_transition_matrix(
    num_states: int,
    bandwidth: int,
    softmax_temp: float = 0.5,
    generator: torch.Generator | None = None,
    repeats_always_possible: bool = True,
) -> torch.Tensor:
    """A random row-stochastic ``[n, n]`` matrix, non-zero only on shuffled cyclic bands.

    Dense logits ``randn / softmax_temp`` are soft-maxed per row, then masked to a banded matrix whose
    rows are permuted (so state ``i`` may move to the ``2*bandwidth + 1`` states around ``perm[i]``),
    plus the diagonal when ``repeats_always_possible``, and renormalised.

    Raises:
        DesignError: the sampled matrix is not ergodic (only possible for very few states).
    """
    if softmax_temp <= 0:
        raise DesignError(f"softmax_temp={softmax_temp} must be > 0; pass a positive temperature such as 0.5.")
    generator = generator if generator is not None else torch.Generator()
    logits = torch.randn(num_states, num_states, generator=generator)
    dense = (logits / softmax_temp).softmax(dim=-1)
    mask = banded_square_matrix(num_states, bandwidth).bool()
    mask = mask[torch.randperm(num_states, generator=generator)]
    if repeats_always_possible:
        mask = mask | torch.eye(num_states, dtype=torch.bool)
    matrix = torch.where(mask, dense, torch.zeros_like(dense))
    matrix = matrix / matrix.sum(dim=-1, keepdim=True)
    if not is_primitive(matrix):
        raise DesignError(
            f"The sampled {num_states}-state transition matrix (bandwidth {bandwidth}) is not ergodic; "
            "use another random_seed or more states."
        )
    return matrix


def stationary_distribution(transition_matrix: torch.Tensor, tolerance: float = 1e-5) -> torch.Tensor:
    """The stationary distribution ``pi`` with ``pi P = pi``, ``sum(pi) = 1``, shape ``[n]``.

    Solved as holo does, by least squares on ``[(I - P)^T; 1^T] pi = [0; 1]`` through a QR
    decomposition, so the floats (and hence the motifs drawn from ``pi``) match holo-bench.
    """
    n = transition_matrix.shape[0]
    system = torch.cat([(torch.eye(n) - transition_matrix).T, torch.ones(1, n)], dim=0)  # (n+1, n)
    target = torch.zeros(n + 1, 1)
    target[-1] = 1.0
    q, r = torch.linalg.qr(system)
    try:
        solution = torch.linalg.solve(r, q.T @ target)  # (n, 1)
        residual = torch.linalg.norm(system @ solution - target) / torch.linalg.norm(target)
    except torch.linalg.LinAlgError:  # singular: several stationary laws (a reducible chain)
        residual = torch.tensor(math.inf)
    if not residual <= tolerance:
        raise DesignError(
            f"No stationary distribution for this transition matrix (residual {float(residual):.2e}); "
            "pass an ergodic matrix (see is_primitive)."
        )
    return solution.squeeze(-1)


def sample_dmp(
    initial_dist: torch.Tensor,
    transition_matrix: torch.Tensor,
    num_steps: int,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """Trajectories of the Markov chain, shape ``[num_samples, num_steps]`` of states ``0..n-1``.

    The first state is drawn from ``initial_dist`` ``[n]``, each next one from the current state's row.
    """
    generator = generator if generator is not None else torch.Generator()
    samples = torch.zeros(num_samples, num_steps, dtype=torch.int64)
    # clamp: the QR-solved stationary vector can carry -1e-9 round-off, which multinomial rejects
    samples[:, 0] = torch.multinomial(initial_dist.clamp(min=0.0), num_samples, replacement=True, generator=generator)
    for t in range(1, num_steps):
        samples[:, t] = torch.multinomial(transition_matrix[samples[:, t - 1]], 1, generator=generator).squeeze(-1)
    return samples


def dmp_log_likelihood(
    samples: torch.LongTensor, initial_dist: torch.Tensor, transition_matrix: torch.Tensor
) -> torch.Tensor:
    """Log-probability of each trajectory ``[B, L]`` under the chain, shape ``[B]`` (``-inf`` if infeasible)."""
    log_p = torch.log(initial_dist[samples[:, 0]])
    if samples.shape[1] > 1:
        log_p = log_p + torch.log(transition_matrix[samples[:, :-1], samples[:, 1:]]).sum(-1)
    return log_p
