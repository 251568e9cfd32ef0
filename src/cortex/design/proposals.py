"""Proposal sources beside LaMBO-2's diffusion chains: a trust region of repaired edits, crossover, parents.

* :func:`farthest_first` picks ``n`` diverse parents among the best designs: the best one first, then
  repeatedly the design farthest (Hamming) from those already chosen (ties: the better design).
* :func:`trust_region` lists the neighbourhood of each parent: every single edit at a mutable position,
  and for each single edit that creates a pair the :class:`~cortex.design.transitions.TransitionSupport`
  does not allow, the *window-repaired double*: the offending neighbour re-decoded jointly
  (:func:`~cortex.design.transitions.joint_decode`) so the new pair chain is allowed. Candidates are
  deduplicated against each other and against the history; the caller ranks them by the acquisition.
* :func:`crossover` joins a prefix of one parent to the suffix of another and re-decodes a small
  window around the junction jointly, so the joined design has allowed pairs there too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cortex.design.transitions import TransitionSupport, joint_decode
from cortex.errors import DesignError


def first_rows(states: torch.Tensor) -> torch.Tensor:
    """Indices of the first occurrence of each distinct row of ``states`` ``(n, L)``, in their original order
    (so a ranked list stays ranked after its duplicates are dropped)."""
    if len(states) == 0:
        return torch.zeros(0, dtype=torch.long)
    _, inverse = torch.unique(states, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(states), dtype=torch.long)
    return first.scatter_reduce(0, inverse, torch.arange(len(states)), reduce="amin").sort().values


def farthest_first(states: torch.LongTensor, n: int) -> torch.LongTensor:
    """Indices of ``n`` rows of ``states [N, L]`` (ordered best first) chosen farthest-first by Hamming distance.

    Row 0 is taken first; then each step takes the row whose distance to its nearest chosen row is
    largest, the earliest (best) row on ties. Fewer than ``n`` rows: all of them, in that greedy order.
    """
    N = len(states)
    n = min(n, N)
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    dist = (states[:, None, :] != states[None, :, :]).sum(-1)  # (N, N)
    chosen = [0]
    nearest = dist[0].clone()
    for _ in range(n - 1):
        nearest[chosen] = -1
        pick = int(torch.argmax(nearest))  # argmax returns the first maximum: the better design on ties
        chosen.append(pick)
        nearest = torch.minimum(nearest, dist[pick])
    return torch.tensor(chosen)


def single_edits(parent: torch.LongTensor, mutable: torch.BoolTensor, num_states: int) -> torch.LongTensor:
    """``(P * (V - 1), L)`` every design one mutable-position edit away from ``parent [L]``."""
    positions = torch.nonzero(mutable).flatten()
    L = len(parent)
    shifts = torch.arange(1, num_states)
    pos = positions.repeat_interleave(len(shifts))
    new = (parent[pos] + shifts.repeat(len(positions))) % num_states
    out = parent.expand(len(pos), L).clone()
    out[torch.arange(len(pos)), pos] = new
    return out


def repair(candidates: torch.LongTensor, edited: torch.LongTensor, mutable: torch.BoolTensor,
           support: TransitionSupport, log_probs: torch.Tensor | None,
           generator: torch.Generator | None) -> torch.LongTensor:
    """Window-repaired doubles: for each candidate with a not-allowed pair next to its edit ``edited [B]``,
    the mutable neighbour on that side re-decoded jointly (emissions ``log_probs [B, L, V]`` or uniform).

    Returns only the repaired designs (rows whose neighbour could be re-decoded).
    """
    B, L = candidates.shape
    V = support.num_states
    allowed = support.allowed
    rows = torch.arange(B)
    masks = []
    for side in (-1, 1):
        nb = edited + side
        inside = (nb >= 0) & (nb < L)
        nbc = nb.clamp(0, L - 1)
        if side < 0:
            left, right = candidates[rows, nbc], candidates[rows, edited]
        else:
            left, right = candidates[rows, edited], candidates[rows, nbc]
        bad = inside & ~allowed[left, right] & mutable[nbc]
        m = torch.zeros(B, L, dtype=torch.bool)
        m[rows[bad], nbc[bad]] = True
        masks.append(m)
    mask = masks[0] | masks[1]
    need = mask.any(-1)
    if not bool(need.any()):
        return candidates[:0]
    lp = torch.zeros(int(need.sum()), L, V) if log_probs is None else log_probs[need]
    decoded, ok = joint_decode(lp, mask[need], candidates[need], support.log_weights(), generator)
    return decoded[ok]


def trust_region(
    parents: torch.LongTensor,
    mutable: torch.BoolTensor,
    support: TransitionSupport,
    seen: Callable[[torch.LongTensor], torch.BoolTensor],
    *,
    max_candidates: int | None = None,
    log_probs: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    repair_doubles: bool = True,
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """New designs near ``parents [P, L]``: single edits plus window-repaired doubles, none in the history.

    Args:
        mutable: ``[L]`` positions that may change.
        support: the learned transition support (decides which singles need a repair).
        seen: ``states -> bool [B]``, True for designs already evaluated.
        max_candidates: keep at most this many (a uniform subsample), to bound the scoring cost.
        log_probs: ``[P, L, V]`` emissions for the repairs (e.g. the denoising LM at each parent); uniform if None.
        repair_doubles: add the window-repaired doubles (False: single edits only).

    Returns:
        ``(candidates [N, L], parent_index [N])``, distinct, no forbidden pair, never a seen design.
    """
    if parents.dim() != 2 or mutable.shape != (parents.shape[1],):
        raise DesignError(f"trust_region takes parents [P, L] and mutable [L]; got {tuple(parents.shape)} and "
                          f"{tuple(mutable.shape)}.")
    V = support.num_states
    groups, owners = [], []
    for p, parent in enumerate(parents):
        singles = single_edits(parent, mutable, V)
        edited = (singles != parent).float().argmax(-1)
        lp = None if log_probs is None else log_probs[p].expand(len(singles), -1, -1)
        doubles = repair(singles, edited, mutable, support, lp, generator) if repair_doubles else singles[:0]
        for block in (singles, doubles):
            groups.append(block)
            owners.append(torch.full((len(block),), p, dtype=torch.long))
    if not groups:
        return parents[:0], torch.zeros(0, dtype=torch.long)
    cands, owner = torch.cat(groups), torch.cat(owners)
    keep = support.plausible(cands)
    cands, owner = cands[keep], owner[keep]
    first = first_rows(cands)
    cands, owner = cands[first], owner[first]
    if len(cands):
        new = ~seen(cands)
        cands, owner = cands[new], owner[new]
    if max_candidates is not None and len(cands) > max_candidates:
        pick = torch.randperm(len(cands), generator=generator)[:max_candidates].sort().values
        cands, owner = cands[pick], owner[pick]
    return cands, owner


def crossover(
    parents: torch.LongTensor,
    n: int,
    mutable: torch.BoolTensor,
    support: TransitionSupport,
    *,
    window: int = 2,
    log_probs: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """``n`` one-point crossovers of random distinct parent pairs, the junction re-decoded jointly.

    The child takes parent ``a`` before a random cut and parent ``b`` from it; the ``window`` mutable
    positions on each side of the cut are re-decoded under the support (emissions ``log_probs [P, L, V]``
    of parent ``a``, or uniform). Returns up to ``n`` children (rows the support cannot bridge are dropped).
    """
    P, L = parents.shape
    if P < 2 or n < 1 or L < 2:
        return parents[:0]
    a = torch.randint(P, (n,), generator=generator)
    b = (a + torch.randint(1, P, (n,), generator=generator)) % P
    cut = torch.randint(1, L, (n,), generator=generator)
    pos = torch.arange(L)[None]
    child = torch.where(pos < cut[:, None], parents[a], parents[b])
    near = (pos >= (cut[:, None] - window)) & (pos < cut[:, None] + window)
    mask = near & mutable[None]
    lp = torch.zeros(n, L, support.num_states) if log_probs is None else log_probs[a]
    decoded, ok = joint_decode(lp, mask, child, support.log_weights(), generator)
    return decoded[ok]


def elite(values: torch.Tensor, n: int, generator: torch.Generator | None = None,
          age: torch.Tensor | None = None) -> torch.LongTensor:
    """Indices of the ``n`` best of ``values [N]`` (maximized); ties go to the youngest (lowest ``age``,
    e.g. rounds since evaluated), then at random.

    Equally good designs share the places, the newest first, so a population on a plateau drifts along
    it one step per round (as the genetic algorithm's survival, where new children win most ties)
    instead of sticking to the earliest found or hopping among old ones.
    """
    shuffle = torch.randperm(len(values), generator=generator)
    order = shuffle
    if age is not None:
        order = order[torch.argsort(age[order], stable=True)]
    order = order[torch.argsort(values[order], descending=True, stable=True)]
    return order[:n]


def offspring(
    parents: torch.LongTensor,
    n: int,
    mutable: torch.BoolTensor,
    num_states: int,
    *,
    mutation_prob: float,
    crossover_prob: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """``n`` genetic-algorithm children of ``parents [P, L]``: uniform crossover, then uniform mutation.

    Each child copies a random parent ``a``, takes each position from a second random parent with
    probability ``crossover_prob``, then redraws each mutable position uniformly with probability
    ``mutation_prob`` (the scheme of :class:`~cortex.design.baselines.GeneticAlgorithm`). Immutable
    positions keep parent ``a``'s state. Returns ``(children [n, L], first_parent [n])``; children may
    repeat a parent or each other (the caller deduplicates and filters them).
    """
    P, L = parents.shape
    if P == 0 or n < 1:
        return parents[:0], torch.zeros(0, dtype=torch.long)
    a = torch.randint(P, (n,), generator=generator)
    b = torch.randint(P, (n,), generator=generator)
    child = torch.where(torch.rand(n, L, generator=generator) < crossover_prob, parents[b], parents[a])
    child = torch.where(mutable[None], child, parents[a])
    mutate = (torch.rand(n, L, generator=generator) < mutation_prob) & mutable[None]
    child = torch.where(mutate, torch.randint(num_states, (n, L), generator=generator), child)
    return child, a
