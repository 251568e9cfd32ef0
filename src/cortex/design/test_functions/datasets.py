"""Datasets generated from the closed-form test functions (for training surrogates and tests)."""

from __future__ import annotations

import torch

from cortex.data.builtin import register_data
from cortex.errors import DataError

__all__ = ["ehrlich_dataset"]


@register_data("ehrlich")
def ehrlich_dataset(
    num_states: int = 20,
    dim: int = 32,
    num_motifs: int = 2,
    motif_length: int = 4,
    quantization: int | None = None,
    epistasis_factor: float = 0.0,
    random_seed: int = 0,
    num_samples: int = 2000,
    infeasible_fraction: float = 0.0,
    seed: int = 0,
):
    """Generated Ehrlich-function data: columns ``sequence`` (str), ``value`` (float), ``feasible`` (int).

    Feasible sequences are drawn from the function's Markov chain (its DMP) and scored exactly;
    ``infeasible_fraction`` of the rows are feasible draws with random substitutions until the
    chain rejects them (``feasible = 0``, ``value = NaN``: an infeasible sequence has no value).
    Sequences are written over the function's default alphabet (state ``i`` → ``alphabet[i]``; for
    ``num_states <= 20`` the first amino acids), so a root with ``tokenizer: char, chars: <alphabet>``
    (or ``protein`` for 20 states) reads them with state ``i`` as token ``5 + i``.
    """
    import datasets

    from cortex.design.test_functions import Ehrlich

    if not 0.0 <= infeasible_fraction < 1.0:
        raise DataError(f"ehrlich infeasible_fraction={infeasible_fraction} must be in [0, 1).")
    if num_samples < 2:
        raise DataError(f"ehrlich num_samples={num_samples} must be at least 2.")
    fn = Ehrlich(num_states=num_states, dim=dim, num_motifs=num_motifs, motif_length=motif_length,
                 quantization=quantization, epistasis_factor=epistasis_factor, random_seed=random_seed)
    g = torch.Generator().manual_seed(int(seed))
    n_bad = int(round(infeasible_fraction * num_samples))
    states = fn.random_feasible(num_samples, seed=g)
    for i in range(n_bad):  # mutate until infeasible: one random substitution at a time
        row = states[i].clone()
        while bool(fn.is_feasible(row[None])[0]):
            pos = int(torch.randint(dim, (1,), generator=g))
            row[pos] = int(torch.randint(num_states, (1,), generator=g))
        states[i] = row
    values = fn(states, noise=False)
    feasible = fn.is_feasible(states)
    value = torch.where(feasible, values, torch.full_like(values, float("nan")))
    perm = torch.randperm(num_samples, generator=g)
    return datasets.Dataset.from_dict({
        "sequence": fn.to_strings(states[perm]),
        "value": value[perm].tolist(),
        "feasible": feasible[perm].long().tolist(),
    })
