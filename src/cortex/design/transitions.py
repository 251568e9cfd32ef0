"""Learned transition support and joint decoding of masked runs (repair moves for LaMBO-2).

Many sequence spaces forbid some neighbouring pairs of states (Ehrlich functions ban transitions of a
sparse Markov chain; proteins have their own local grammar). Changing one position alone then often
makes a design infeasible, and the improving move is a *pair*: the wanted state plus a bridging state
next to it. Two pieces make such moves:

* :class:`TransitionSupport` learns, from every evaluated design, which adjacent pairs ``(a, b)`` are
  allowed: a pair seen in a feasible design is allowed; a pair is forbidden when it is the only pair of
  an infeasible design that no feasible design has shown (so it alone made the design infeasible);
  every other pair is unseen and keeps a small probability ``unseen_prob``.
* :func:`joint_decode` samples the masked positions of each sequence *jointly*: a first-order chain
  whose emission at a masked position is a per-position distribution ``p_i(v)`` (the denoising LM's,
  guided or not, or uniform), at a fixed position the current state, and whose transition weight is the
  support's ``w(a, b)`` for every pair that touches a masked position. Forward filtering, backward
  sampling draws each masked run with probability ``prod_i p_i(v_i) prod w / Z`` exactly, so a run
  never contains a forbidden pair and bridges its fixed neighbours when the support allows it.

:func:`window_mask` turns per-position saliency into contiguous windows of edit positions, so that a
salient position and its neighbours are re-decoded together.
"""

from __future__ import annotations

import math

import torch

from cortex.errors import DesignError


class TransitionSupport:
    """Which adjacent state pairs are allowed, learned from evaluated designs (see the module docstring).

    Args:
        num_states: ``V``.
        unseen_prob: weight of a pair never seen in a feasible design and never blamed (in ``(0, 1]``;
            allowed pairs weigh 1, forbidden ones 0).
    """

    def __init__(self, num_states: int, unseen_prob: float = 0.05) -> None:
        if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 1:
            raise DesignError(f"num_states={num_states!r} must be an integer >= 1.")
        if not (isinstance(unseen_prob, (int, float)) and 0.0 < unseen_prob <= 1.0):
            raise DesignError(f"unseen_prob={unseen_prob!r} must be in (0, 1].")
        self.num_states = num_states
        self.unseen_prob = float(unseen_prob)
        self.allowed = torch.zeros(num_states, num_states, dtype=torch.bool)
        self.forbidden = torch.zeros(num_states, num_states, dtype=torch.bool)
        self._infeasible: list[torch.Tensor] = []  # bigram sets of infeasible designs, re-blamed as support grows

    @staticmethod
    def _pairs(states: torch.LongTensor, num_states: int) -> torch.LongTensor:
        """``(B, L-1)`` flat pair index ``a * V + b`` of each adjacent pair."""
        return states[:, :-1] * num_states + states[:, 1:]

    def update(self, states: torch.LongTensor, feasible: torch.BoolTensor) -> None:
        """Add evaluated designs ``states [B, L]`` with their feasibility ``[B]`` (failed ones left out)."""
        states = torch.as_tensor(states, dtype=torch.long)
        feasible = torch.as_tensor(feasible, dtype=torch.bool)
        if states.dim() != 2 or feasible.shape != (len(states),):
            raise DesignError(f"update takes states [B, L] and feasible [B]; got {tuple(states.shape)} and "
                              f"{tuple(feasible.shape)}.")
        if states.shape[1] < 2 or len(states) == 0:
            return
        V = self.num_states
        pairs = self._pairs(states, V)
        flat = self.allowed.view(-1)
        flat[pairs[feasible].flatten()] = True
        self._infeasible.extend(torch.unique(row) for row in pairs[~feasible])
        self._blame()

    def _blame(self) -> None:
        """Forbid a pair that is the only not-allowed pair of some infeasible design."""
        allowed = self.allowed.view(-1)
        forbidden = torch.zeros_like(allowed)
        keep = []
        for row in self._infeasible:
            unknown = row[~allowed[row]]
            if len(unknown) == 1:
                forbidden[unknown] = True
            if len(unknown):
                keep.append(unknown)  # only the not-yet-allowed pairs can be blamed later
        self._infeasible = keep
        self.forbidden = (forbidden & ~allowed).view(self.num_states, self.num_states)

    def log_weights(self) -> torch.Tensor:
        """``(V, V)`` log transition weights: 0 allowed, ``log(unseen_prob)`` unseen, ``-inf`` forbidden."""
        w = torch.full((self.num_states, self.num_states), math.log(self.unseen_prob))
        w[self.allowed] = 0.0
        w[self.forbidden] = -math.inf
        return w

    def plausible(self, states: torch.LongTensor, strict: bool = False) -> torch.BoolTensor:
        """``(B,)`` no forbidden pair (``strict``: every pair allowed)."""
        pairs = self._pairs(torch.as_tensor(states, dtype=torch.long), self.num_states)
        if strict:
            return self.allowed.view(-1)[pairs].all(-1)
        return ~self.forbidden.view(-1)[pairs].any(-1)


def joint_decode(
    log_probs: torch.Tensor,
    masked: torch.BoolTensor,
    states: torch.LongTensor,
    log_transitions: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.LongTensor, torch.BoolTensor]:
    """Sample every masked position jointly under the transition support (forward filter, backward sample).

    Args:
        log_probs: ``(B, L, V)`` per-position log-distributions (read at masked positions only).
        masked: ``(B, L)`` positions to decode.
        states: ``(B, L)`` current states (kept at unmasked positions).
        log_transitions: ``(V, V)`` log weights ``w(a, b)`` of the pair ``(a, b)``; used for every pair
            with at least one masked side (pairs of two fixed positions are not the decoder's business).

    Returns:
        ``(new_states, ok)``: ``ok [B]`` is False for rows with no masked run the support allows at all;
        those rows are decoded position by position from ``log_probs`` instead.
    """
    B, L, V = log_probs.shape
    if masked.shape != (B, L) or states.shape != (B, L) or log_transitions.shape != (V, V):
        raise DesignError(f"joint_decode: log_probs {tuple(log_probs.shape)}, masked {tuple(masked.shape)}, states "
                          f"{tuple(states.shape)} and log_transitions {tuple(log_transitions.shape)} do not agree.")
    log_probs = log_probs.float()
    fixed = torch.full_like(log_probs, -math.inf).scatter_(-1, states[..., None], 0.0)
    emit = torch.where(masked[..., None], log_probs, fixed)  # (B, L, V)
    trans = log_transitions.float()
    touches = masked[:, 1:] | masked[:, :-1]  # (B, L-1): pair t-1 -> t uses the support
    # forward filter: alpha[t, v] = emit[t, v] + log sum_u exp(alpha[t-1, u] + w_t(u, v))
    alphas = [emit[:, 0]]
    for t in range(1, L):
        w = torch.where(touches[:, t - 1, None, None], trans, torch.zeros_like(trans))  # (B, V, V)
        alphas.append(emit[:, t] + torch.logsumexp(alphas[-1][:, :, None] + w, dim=1))
    ok = torch.isfinite(torch.logsumexp(alphas[-1], -1))
    out = states.clone()
    # backward sample: v_L ~ alpha[L]; v_{t-1} ~ alpha[t-1, u] + w_t(u, v_t)
    logits = alphas[-1]
    for t in range(L - 1, -1, -1):
        pick = _sample(logits, generator)
        out[:, t] = torch.where(masked[:, t], pick, states[:, t])
        if t:
            w = torch.where(touches[:, t - 1, None], trans[:, out[:, t]].T, torch.zeros(B, V))  # (B, V)
            logits = alphas[t - 1] + w
    if not bool(ok.all()):
        independent = _sample(log_probs.reshape(B * L, V), generator).reshape(B, L)
        fallback = torch.where(masked, independent, states)
        out = torch.where(ok[:, None], out, fallback)
    return out, ok


def _sample(logits: torch.Tensor, generator: torch.Generator | None) -> torch.LongTensor:
    """One draw per row of ``softmax(logits)`` (rows with no finite logit draw uniformly)."""
    dead = ~torch.isfinite(logits).any(-1, keepdim=True)
    logits = torch.where(dead, torch.zeros_like(logits), logits)
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def window_mask(
    scores: torch.Tensor,
    allowed: torch.BoolTensor,
    num_windows: int,
    width: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.BoolTensor:
    """``(B, L)`` contiguous windows of ``width`` allowed positions around salient centres.

    ``num_windows`` centres per row are drawn without replacement from ``softmax(z / temperature)`` of
    the standardized finite ``scores`` over ``allowed`` positions (Gumbel top-k); each centre's window
    covers ``width`` positions (the centre, then alternately right and left), clipped to the sequence
    and to ``allowed``, so immutable positions never change.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise DesignError(f"window width={width!r} must be an integer >= 1.")
    finite = allowed & torch.isfinite(scores)
    count = finite.sum(-1, keepdim=True).clamp(min=1)
    mean = torch.where(finite, scores, 0.0).sum(-1, keepdim=True) / count
    var = torch.where(finite, (scores - mean) ** 2, 0.0).sum(-1, keepdim=True) / count
    z = (scores - mean) / var.sqrt().clamp(min=1e-12)
    uniform = torch.rand(scores.shape, generator=generator).clamp(1e-12, 1 - 1e-12)
    keys = torch.where(finite, z / temperature - torch.log(-torch.log(uniform)), -math.inf)
    order = keys.argsort(dim=-1, descending=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(scores.shape[-1]).expand_as(order))
    centres = (rank < num_windows) & finite
    mask = centres.clone()
    L = scores.shape[-1]
    for k in range(1, width):
        shift = (k + 1) // 2 * (1 if k % 2 else -1)  # +1, -1, +2, -2, ...
        moved = torch.zeros_like(centres)
        if shift > 0:
            moved[:, shift:] = centres[:, : L - shift]
        else:
            moved[:, : L + shift] = centres[:, -shift:]
        mask |= moved
    return mask & allowed
