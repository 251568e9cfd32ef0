"""LaMBO-2: guided discrete diffusion over a NeuralTree (Gruver, Stanton et al., NeurIPS 2023).

Given a trained tree with a denoising-LM leaf and property leaves, :class:`LaMBO2` improves a batch
of sequences by steps. Each step, for every sequence:

1. **Saliency.** Position ``i`` scores the change of the acquisition ``a(x)``
   (:class:`~cortex.design.acquisition.EnsembleAcquisition`) if its token were masked: large where
   the current token holds the design back. The published estimate is first order,
   ``s_i = grad_i . (e_mask - e_i)`` with ``e_i`` the token embedding (``saliency="gradient"``);
   the default computes the change exactly with one forward pass per position
   (``saliency="occlusion"``), see :meth:`LaMBO2.saliency`. Immutable positions are excluded.
2. **Edit positions.** ``m`` positions (``num_mutations``) are drawn without replacement from
   ``softmax(z / tau)`` over the allowed ones, ``z`` the saliency standardized per sequence (so that
   ``tau`` means the same for every model and acquisition scale).
3. **Corruption.** A fraction ``1 / sqrt(1 + t)`` of those positions (at least one) is masked at
   step ``t``: early steps rewrite more, later ones polish.
4. **Guidance.** With the trunk features ``h`` of the masked sequence fixed, a perturbation ``delta``
   at the masked positions is optimized with Adam for ``K`` steps on
   ``-(1 - lambda) a(h + delta) + lambda KL(p_delta || p_ref)``, ``p_ref`` the unguided denoising
   distribution. After each update the masked positions are decoded by sampling ``p_delta``
   restricted to the alphabet (special tokens can never be drawn).
5. **Acceptance.** A decoded sequence replaces the current one only if its acquisition (clean
   forward) is strictly higher and the feasibility callable accepts it; every decoded sequence is
   kept in the candidate buffer with its score.

Sequences are integer states ``0..V-1`` (``LongTensor [batch, length]``, the BoTorch / pytorch-holo
convention) or strings over ``alphabet``; the tree sees its root tokenizer's ids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from cortex.design.acquisition import DesignObjective, EnsembleAcquisition
from cortex.design.alphabet import check_alphabet, state_token_ids, strings_to_states
from cortex.design.proposals import first_rows
from cortex.design.transitions import TransitionSupport, joint_decode, window_mask
from cortex.errors import DesignError

FeasibilityFn = Callable[[torch.Tensor], torch.Tensor]  # states [B, L] -> bool [B]
OCCLUSION_CHUNK = 4096  # sequences per forward pass when masking positions one at a time


@dataclass(frozen=True)
class LaMBO2Config:
    """Settings of the guided diffusion; validates itself.

    Args:
        num_steps: guided diffusion steps ``T`` per :meth:`LaMBO2.optimize` call.
        num_mutations: edit budget ``m``: positions chosen per sequence per step.
        guidance_steps: Adam updates ``K`` of the trunk perturbation per step (one decode after each).
        guidance_lr: Adam learning rate of the perturbation.
        kl_weight: ``lambda`` in ``-(1 - lambda) acquisition + lambda KL``; in ``[0, 1)``.
        saliency_temperature: ``tau`` of the softmax over standardized saliency; small = greedy.
        saliency: ``gradient`` (the published first-order estimate ``grad . (e_mask - e)``) or
            ``occlusion`` (the exact change of the acquisition when each position is masked, one forward
            pass per position; the quantity the gradient estimates). See :meth:`LaMBO2.saliency`.
        saliency_path_points: gradients averaged along the path from the tokens to the mask embedding
            (0: the plain first-order gradient at the tokens); see :meth:`LaMBO2.saliency`.
        resample_edit_positions: choose new edit positions every step (else once per ``optimize``).
        max_edits: most positions a sequence may differ from its seed (``None``: unbounded).
        edit_window: width of the contiguous window edited around each of the ``num_mutations`` salient
            centres (1: single positions, as published); neighbours of a salient position are re-decoded with it.
        decoder: ``independent`` (each masked position sampled on its own, as published) or ``joint``
            (the masked runs sampled together under the learned transition support, see
            :func:`~cortex.design.transitions.joint_decode`; needs :attr:`LaMBO2.support`, else independent).
        decode_uniform_mix: ``epsilon``: decoding samples ``(1 - epsilon) p_delta + epsilon / V``, so every
            state keeps a chance at an edited position even where the denoising LM rules it out (0: as
            published). A small floor lets the search leave the LM's habits when the surrogate has
            stopped ranking the few improving edits.
    """

    num_steps: int = 4
    num_mutations: int = 2
    guidance_steps: int = 8
    guidance_lr: float = 0.5
    kl_weight: float = 0.5
    saliency_temperature: float = 0.5
    saliency: str = "occlusion"
    saliency_path_points: int = 4
    resample_edit_positions: bool = True
    max_edits: int | None = None
    decode_uniform_mix: float = 0.0
    edit_window: int = 1
    decoder: str = "independent"

    def __post_init__(self) -> None:
        if self.decoder not in ("independent", "joint"):
            raise DesignError(f"lambo.decoder={self.decoder!r} is not one of independent, joint.")
        for name in ("num_steps", "num_mutations", "guidance_steps", "edit_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DesignError(f"lambo.{name}={value!r} must be an integer >= 1.")
        if not (isinstance(self.guidance_lr, (int, float)) and self.guidance_lr > 0):
            raise DesignError(f"lambo.guidance_lr={self.guidance_lr!r} must be > 0.")
        if not (isinstance(self.kl_weight, (int, float)) and 0.0 <= self.kl_weight < 1.0):
            raise DesignError(f"lambo.kl_weight={self.kl_weight!r} must be in [0, 1); 1 would ignore the objective.")
        if self.saliency not in ("gradient", "occlusion"):
            raise DesignError(f"lambo.saliency={self.saliency!r} is not one of gradient, occlusion.")
        if isinstance(self.saliency_path_points, bool) or not isinstance(self.saliency_path_points, int) \
                or self.saliency_path_points < 0:
            raise DesignError(f"lambo.saliency_path_points={self.saliency_path_points!r} must be an integer >= 0.")
        if not (isinstance(self.saliency_temperature, (int, float)) and self.saliency_temperature > 0):
            raise DesignError(f"lambo.saliency_temperature={self.saliency_temperature!r} must be > 0.")
        if not (isinstance(self.decode_uniform_mix, (int, float)) and 0.0 <= self.decode_uniform_mix <= 1.0):
            raise DesignError(f"lambo.decode_uniform_mix={self.decode_uniform_mix!r} must be in [0, 1].")
        if self.max_edits is not None and (isinstance(self.max_edits, bool) or not isinstance(self.max_edits, int)
                                           or self.max_edits < 1):
            raise DesignError(f"lambo.max_edits={self.max_edits!r} must be an integer >= 1 or None.")

    def corrupt_fraction(self, step: int) -> float:
        """Fraction of the edit positions masked at step ``step`` (0-based): ``1 / sqrt(1 + step)``."""
        return 1.0 / math.sqrt(1.0 + step)


@dataclass
class StepReport:
    """One guided step, averaged over the batch.

    Attributes:
        step: 0-based step index.
        accepted: sequences whose current design changed this step.
        mean_score: mean acquisition of the current designs after the step.
        design_loss, acquisition_loss, kl: the guidance objective's terms at the last update.
    """

    step: int
    accepted: int
    mean_score: float
    design_loss: float
    acquisition_loss: float
    kl: float


@dataclass
class LaMBO2Result:
    """What :meth:`LaMBO2.optimize` found.

    Attributes:
        states: ``(B, L)`` the final design of each chain (its seed if nothing was accepted).
        scores: ``(B,)`` their log-acquisition values.
        seed_scores: ``(B,)`` the seeds' log-acquisition values.
        candidates: ``(N, L)`` every decoded sequence, in the order it was produced.
        candidate_scores: ``(N,)`` their log-acquisition values.
        candidate_feasible: ``(N,)`` whether the feasibility callable accepted them.
        candidate_chain: ``(N,)`` the chain (row of the seeds) each came from.
        steps: per-step :class:`StepReport`.
    """

    states: torch.Tensor
    scores: torch.Tensor
    seed_scores: torch.Tensor
    candidates: torch.Tensor
    candidate_scores: torch.Tensor
    candidate_feasible: torch.Tensor
    candidate_chain: torch.Tensor
    steps: list[StepReport] = field(default_factory=list)

    def ranked_candidates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct feasible candidates ``(n, L)`` and scores ``(n,)``, best first."""
        keep = self.candidate_feasible & torch.isfinite(self.candidate_scores)
        states, scores = self.candidates[keep], self.candidate_scores[keep]
        order = torch.argsort(scores, descending=True, stable=True)
        states, scores = states[order], scores[order]
        first = first_rows(states)
        return states[first], scores[first]


class LaMBO2:
    """Guided discrete diffusion over a trained NeuralTree (see the module docstring).

    Args:
        tree: a :class:`~cortex.models.neural_tree.NeuralTreeModel` with a ``denoising_lm`` leaf and
            the leaves ``objective`` names.
        objective: the :class:`~cortex.design.acquisition.DesignObjective`.
        alphabet: one character per state; every character must be a token of the root's tokenizer.
        config: :class:`LaMBO2Config`.
        feasibility_fn: optional ``states [B, L] -> bool [B]``; a step never accepts a sequence it rejects.
        root: the root the sequences feed (default: the denoising leaf's root).
        lm_leaf: the denoising leaf (default: the tree's only one).
        seed: seeds the sampling of edit positions and tokens.
    """

    def __init__(
        self,
        tree,
        objective: DesignObjective,
        *,
        alphabet: str,
        config: LaMBO2Config | None = None,
        feasibility_fn: FeasibilityFn | None = None,
        root: str | None = None,
        lm_leaf: str | None = None,
        seed: int = 0,
    ) -> None:
        self.tree = tree
        self.objective = objective
        self.config = config or LaMBO2Config()
        self.feasibility_fn = feasibility_fn
        # the learned transition support the joint decoder reads (the design loop keeps it up to date)
        self.support: TransitionSupport | None = None
        self.alphabet = check_alphabet(alphabet)
        specs = tree.config.leaf_specs()
        lms = [name for name, spec in specs.items() if spec.kind == "denoising_lm"]
        if lm_leaf is None:
            if not lms:
                raise DesignError(
                    f"The tree has no denoising_lm leaf (its leaves are {sorted(specs)}); LaMBO-2 decodes with one. "
                    "Add e.g. leaves['mlm'] = {'kind': 'denoising_lm', 'branch': ..., 'root': ...} and train it."
                )
            if len(lms) > 1:
                raise DesignError(f"The tree has several denoising_lm leaves {lms}; pass lm_leaf=one of them.")
            lm_leaf = lms[0]
        elif lm_leaf not in lms:
            raise DesignError(f"lm_leaf={lm_leaf!r} is not a denoising_lm leaf of the tree; those are {lms or 'none'}.")
        self.lm_leaf = lm_leaf
        self.root = root or specs[lm_leaf].root
        if self.root not in tree.roots:
            raise DesignError(f"root={self.root!r} is not a root of the tree; roots are {list(tree.roots.keys())}.")
        if len(tree.roots) > 1:
            raise DesignError(
                f"The tree has roots {list(tree.roots.keys())}; LaMBO-2 designs the sequence of a single-root tree "
                f"(here {self.root!r}). Train a tree whose only root reads the designed sequence."
            )
        objective.validate(tree)
        tokenizer = tree.root_tokenizers()[self.root]
        self.state_ids = state_token_ids(tokenizer, self.alphabet)  # (V,) token id of each state
        vocab = tree.roots[self.root].vocab_size
        self.id_to_state = torch.full((vocab,), -1, dtype=torch.long)
        self.id_to_state[self.state_ids] = torch.arange(len(self.alphabet))
        self.mask_id = tree.roots[self.root].mask_token_id
        if self.mask_id is None:
            raise DesignError(f"Root {self.root!r} has no mask token; LaMBO-2 masks edit positions with it.")
        self.max_len = tree.roots[self.root].max_len
        self.generator = torch.Generator().manual_seed(int(seed))

    # ----------------------------------------------------------------------------------- encoding
    def to_states(self, seeds: torch.Tensor | Sequence[str]) -> torch.LongTensor:
        """Validate seeds (states ``[B, L]`` or strings over the alphabet) and return states ``[B, L]``."""
        V = len(self.alphabet)
        if isinstance(seeds, torch.Tensor):
            if seeds.dim() != 2 or seeds.shape[0] == 0 or seeds.is_floating_point() or seeds.dtype == torch.bool:
                raise DesignError(
                    f"seeds must be a LongTensor [batch>0, length] of states 0..{V - 1}; got {seeds.dtype} "
                    f"{tuple(seeds.shape)}."
                )
            states = seeds.detach().to("cpu", torch.long)
            if int(states.min()) < 0 or int(states.max()) >= V:
                raise DesignError(
                    f"seeds hold states outside 0..{V - 1} (min {int(states.min())}, max {int(states.max())}); the "
                    f"alphabet {self.alphabet!r} has {V} states."
                )
        else:
            if isinstance(seeds, str) or len(seeds) == 0:
                raise DesignError("seeds must be a non-empty list of strings (or a LongTensor of states).")
            states = strings_to_states(list(seeds), self.alphabet)
        if self.max_len is not None and states.shape[1] > self.max_len:
            raise DesignError(
                f"seeds have length {states.shape[1]} but root {self.root!r} takes at most {self.max_len} tokens; "
                "shorten them or build the tree with a larger max_len."
            )
        return states

    def ids(self, states: torch.LongTensor) -> torch.LongTensor:
        """Token ids ``[B, L]`` of states."""
        return self.state_ids[states]

    def states(self, ids: torch.LongTensor) -> torch.LongTensor:
        """States ``[B, L]`` of token ids (``-1`` for non-alphabet tokens)."""
        return self.id_to_state[ids]

    def _inputs(self, ids=None, embeds=None) -> dict:
        x = ids if ids is not None else embeds
        mask = torch.ones(x.shape[:2], dtype=torch.long)
        key = "input_ids" if ids is not None else "inputs_embeds"
        return {self.root: {key: x, "attention_mask": mask}}

    # ----------------------------------------------------------------------------------- scoring
    @torch.no_grad()
    def predict(self, states: torch.LongTensor) -> torch.Tensor:
        """Objective samples ``(E, B, M)`` of states (the ensemble's predicted means)."""
        self.tree.eval()
        out = self.tree(self._inputs(self.ids(states)), leaf_keys=self.objective.leaf_keys)
        return self.objective.samples(out)

    def acquisition(self, baseline: torch.LongTensor) -> EnsembleAcquisition:
        """The acquisition with ``best_f`` / Pareto front from the predictions for ``baseline`` ``[N, L]``."""
        return EnsembleAcquisition(self.objective, self.predict(self.to_states(baseline)))

    @torch.no_grad()
    def lm_log_probs(self, states: torch.LongTensor, masked: torch.BoolTensor) -> torch.Tensor:
        """``(B, L, V)`` the denoising LM's log-distribution over states with ``masked`` positions masked."""
        self.tree.eval()
        ids = torch.where(masked, self.mask_id, self.ids(states))
        return self._state_log_probs(self.tree(self._inputs(ids), leaf_keys=[self.lm_leaf]))

    @torch.no_grad()
    def score(self, states: torch.LongTensor, acquisition: EnsembleAcquisition) -> torch.Tensor:
        """``(B,)`` log-acquisition of states (clean forward)."""
        self.tree.eval()
        return acquisition(self.tree(self._inputs(self.ids(states)), leaf_keys=self.objective.leaf_keys))

    def feasible(self, states: torch.LongTensor) -> torch.BoolTensor:
        """``(B,)`` what the feasibility callable says (all True without one)."""
        if self.feasibility_fn is None:
            return torch.ones(len(states), dtype=torch.bool)
        ok = torch.as_tensor(self.feasibility_fn(states.clone()))
        if ok.shape != (len(states),):
            raise DesignError(
                f"feasibility_fn returned shape {tuple(ok.shape)} for {len(states)} sequences; return a bool tensor [batch]."
            )
        return ok.bool()

    def saliency(self, states: torch.LongTensor, acquisition: EnsembleAcquisition,
                 allowed: torch.BoolTensor | None = None) -> torch.Tensor:
        """``(B, L)`` change of the acquisition if each token were masked; ``-inf`` where not allowed.

        ``gradient``: ``s_i = g_i . (e_mask - e_i)`` with ``e_i`` the token embedding at position ``i``
        and ``g_i`` the gradient of the acquisition with respect to it, at the tokens themselves when
        ``config.saliency_path_points == 0`` (the published estimate), else averaged over that many
        midpoints of the straight path from the tokens to the mask embedding (integrated gradients
        with the masked sequence as baseline). ``occlusion``: ``a(x with position i masked) - a(x)``
        exactly, one batched forward pass per position. The first-order estimate is cheap but on small
        trees, whose mask embedding sits far from the token embeddings, it misranks positions: on the
        two-position toy objective of the tests, over six random initializations, the plain gradient
        put both positions first for under 10% of sequences and the 4-point path average for 0-100%
        depending on the initialization, exact occlusion for 90-100%. Occlusion is the default.
        """
        self.tree.eval()
        scores = self._occlusion(states, acquisition) if self.config.saliency == "occlusion" \
            else self._gradient_saliency(states, acquisition)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, -math.inf)
        return scores

    def _gradient_saliency(self, states: torch.LongTensor, acquisition: EnsembleAcquisition) -> torch.Tensor:
        ids = self.ids(states)
        emb = self.tree.embed(self.root, ids).detach()  # (B, L, E)
        mask_emb = self.tree.embed(self.root, torch.full((1, 1), self.mask_id, dtype=torch.long)).detach()
        direction = mask_emb - emb
        n = self.config.saliency_path_points
        points = [0.0] if n == 0 else [(k + 0.5) / n for k in range(n)]
        grad = torch.zeros_like(emb)
        for t in points:
            x = (emb + t * direction).requires_grad_(True)
            with torch.enable_grad():
                value = acquisition(self.tree(self._inputs(embeds=x), leaf_keys=self.objective.leaf_keys))
                (g,) = torch.autograd.grad(value.sum(), x)
            grad += g / len(points)
        return (grad * direction).sum(-1)

    @torch.no_grad()
    def _occlusion(self, states: torch.LongTensor, acquisition: EnsembleAcquisition) -> torch.Tensor:
        ids = self.ids(states)
        B, L = ids.shape
        base = acquisition(self.tree(self._inputs(ids), leaf_keys=self.objective.leaf_keys))  # (B,)
        scores = torch.empty(B, L)
        per_chunk = max(1, OCCLUSION_CHUNK // max(B, 1))  # positions per forward pass
        for start in range(0, L, per_chunk):
            positions = torch.arange(start, min(L, start + per_chunk))
            masked = ids.repeat(len(positions), 1)  # (P*B, L): block p masks position positions[p]
            rows = torch.arange(len(masked))
            masked[rows, positions.repeat_interleave(B)] = self.mask_id
            value = acquisition(self.tree(self._inputs(masked), leaf_keys=self.objective.leaf_keys))
            scores[:, positions] = (value.reshape(len(positions), B) - base).T
        return scores

    def edit_positions(self, scores: torch.Tensor, allowed: torch.BoolTensor, num: int) -> torch.BoolTensor:
        """``(B, L)`` ``num`` positions per row drawn without replacement from ``softmax(z / tau)``.

        ``z`` standardizes the finite scores of each row; rows with fewer allowed positions take them all.
        """
        finite = allowed & torch.isfinite(scores)
        count = finite.sum(-1, keepdim=True).clamp(min=1)
        mean = torch.where(finite, scores, 0.0).sum(-1, keepdim=True) / count
        var = torch.where(finite, (scores - mean) ** 2, 0.0).sum(-1, keepdim=True) / count
        z = (scores - mean) / var.sqrt().clamp(min=1e-12)
        logits = torch.where(finite, z / self.config.saliency_temperature, -math.inf)
        # Gumbel top-k: the k largest of logits + Gumbel noise are k draws without replacement from
        # softmax(logits) (Plackett-Luce), exact even when tau is tiny and most probabilities underflow
        uniform = torch.rand(logits.shape, generator=self.generator).clamp(1e-12, 1 - 1e-12)
        keys = torch.where(finite, logits - torch.log(-torch.log(uniform)), -math.inf)
        order = keys.argsort(dim=-1, descending=True)
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(scores.shape[-1]).expand_as(order))
        return (rank < num) & finite

    # ----------------------------------------------------------------------------------- optimize
    def optimize(
        self,
        seeds: torch.Tensor | Sequence[str],
        *,
        is_mutable: torch.Tensor | None = None,
        baseline: torch.Tensor | Sequence[str] | None = None,
        acquisition: EnsembleAcquisition | None = None,
        num_steps: int | None = None,
    ) -> LaMBO2Result:
        """Run ``num_steps`` guided steps from ``seeds``; every row is an independent chain.

        Args:
            seeds: states ``[B, L]`` or ``B`` strings over the alphabet.
            is_mutable: ``[L]`` or ``[B, L]`` bool; positions that may change (default all).
            baseline: designs whose predictions set ``best_f`` / the Pareto front (default: the seeds).
            acquisition: a ready acquisition (overrides ``baseline``).
            num_steps: overrides ``config.num_steps``.
        """
        cfg = self.config
        seed_states = self.to_states(seeds)
        B, L = seed_states.shape
        mutable = self._mutable(is_mutable, B, L)
        if acquisition is None:
            acquisition = self.acquisition(seed_states if baseline is None else baseline)
        current = seed_states.clone()
        scores = self.score(current, acquisition)
        seed_scores = scores.clone()
        cand_states, cand_scores, cand_feasible, cand_chain = [], [], [], []
        reports: list[StepReport] = []
        edit_mask = None
        for step in range(cfg.num_steps if num_steps is None else num_steps):
            allowed = mutable.clone()
            if cfg.max_edits is not None:
                edited = current != seed_states
                at_budget = edited.sum(-1, keepdim=True) >= cfg.max_edits
                allowed = torch.where(at_budget, allowed & edited, allowed)
            if edit_mask is None or cfg.resample_edit_positions:
                saliency = self.saliency(current, acquisition, allowed)
                if cfg.edit_window > 1:
                    edit_mask = window_mask(saliency, allowed, cfg.num_mutations, cfg.edit_window,
                                            cfg.saliency_temperature, self.generator)
                else:
                    edit_mask = self.edit_positions(saliency, allowed, cfg.num_mutations)
            corrupted = self._corrupt(edit_mask & allowed, cfg.corrupt_fraction(step))
            new_states, new_scores, new_feasible, report = self._guided_step(current, corrupted, acquisition, step)
            for states_k, scores_k, feasible_k in zip(new_states, new_scores, new_feasible):
                if cfg.max_edits is not None:  # a step may edit several positions: over-budget decodes are rejected
                    feasible_k = feasible_k & ((states_k != seed_states).sum(-1) <= cfg.max_edits)
                improved = (scores_k > scores) & feasible_k & (states_k != current).any(-1)
                current = torch.where(improved[:, None], states_k, current)
                scores = torch.where(improved, scores_k, scores)
                report.accepted += int(improved.sum())
                cand_states.append(states_k)
                cand_scores.append(scores_k)
                cand_feasible.append(feasible_k)
                cand_chain.append(torch.arange(B))
            report.mean_score = float(scores.mean())
            reports.append(report)
        empty = seed_states.new_zeros(0, L)
        return LaMBO2Result(
            states=current,
            scores=scores,
            seed_scores=seed_scores,
            candidates=torch.cat(cand_states) if cand_states else empty,
            candidate_scores=torch.cat(cand_scores) if cand_scores else torch.zeros(0),
            candidate_feasible=torch.cat(cand_feasible) if cand_feasible else torch.zeros(0, dtype=torch.bool),
            candidate_chain=torch.cat(cand_chain) if cand_chain else torch.zeros(0, dtype=torch.long),
            steps=reports,
        )

    def _mutable(self, is_mutable, B: int, L: int) -> torch.BoolTensor:
        if is_mutable is None:
            return torch.ones(B, L, dtype=torch.bool)
        mask = torch.as_tensor(is_mutable)
        if mask.dtype != torch.bool:
            raise DesignError(f"is_mutable must be a bool tensor [L] or [B, L]; got dtype {mask.dtype}.")
        if mask.dim() == 1:
            mask = mask.expand(B, -1)
        if tuple(mask.shape) != (B, L):
            raise DesignError(f"is_mutable has shape {tuple(mask.shape)}; pass [{L}] or [{B}, {L}] to match the seeds.")
        empty = ~mask.any(-1)
        if bool(empty.any()):
            rows = torch.nonzero(empty).flatten().tolist()
            raise DesignError(
                f"is_mutable allows no position in seed rows {rows[:5]}{'...' if len(rows) > 5 else ''}; "
                "mark at least one position True (True = may change)."
            )
        return mask.clone()

    def _corrupt(self, edit_mask: torch.BoolTensor, fraction: float) -> torch.BoolTensor:
        """``(B, L)`` a random ``fraction`` (at least one) of each row's edit positions."""
        corrupted = torch.zeros_like(edit_mask)
        for b in range(len(edit_mask)):
            positions = torch.nonzero(edit_mask[b]).flatten()
            if len(positions) == 0:
                continue
            n = max(1, int(round(fraction * len(positions))))
            pick = torch.randperm(len(positions), generator=self.generator)[:n]
            corrupted[b, positions[pick]] = True
        return corrupted

    def _guided_step(self, current, corrupted, acquisition, step):
        """Optimize the trunk perturbation for ``K`` updates, decoding and scoring after each."""
        cfg = self.config
        tree = self.tree
        tree.eval()
        ids = self.ids(current)
        masked = torch.where(corrupted, self.mask_id, ids)
        with torch.no_grad():
            base = tree(self._inputs(masked), leaf_keys=[self.lm_leaf])
        trunk = base.trunk_outputs
        h = trunk.features.detach()  # (B, T, D)
        # only the masked positions move; they sit at this root's span of the trunk (all of it for a
        # sum trunk, a slice of it for a concat trunk over several roots)
        start, end = trunk.root_spans.get(self.root, (0, h.shape[1]))
        at = torch.zeros(*h.shape[:2], 1, dtype=h.dtype)
        at[:, start:end] = corrupted[..., None].to(h.dtype)
        delta = torch.zeros_like(h, requires_grad=True)
        optimizer = torch.optim.Adam([delta], lr=cfg.guidance_lr)
        leaf_keys = [self.lm_leaf, *[k for k in self.objective.leaf_keys if k != self.lm_leaf]]
        ref_logp = None
        weights = corrupted.to(h.dtype)
        denom = weights.sum().clamp(min=1.0)
        out_states, out_scores, out_feasible = [], [], []
        report = StepReport(step=step, accepted=0, mean_score=0.0, design_loss=0.0, acquisition_loss=0.0, kl=0.0)
        for _ in range(cfg.guidance_steps):
            with torch.enable_grad():
                out = tree.call_from_trunk(h + delta * at, leaf_keys=leaf_keys,
                                           attention_mask=trunk.attention_mask, root_spans=trunk.root_spans)
                logp = self._state_log_probs(out)  # (B, L, V)
                if ref_logp is None:
                    ref_logp = logp.detach()
                kl = (logp.exp() * (logp - ref_logp)).sum(-1)  # (B, L)
                kl = (kl * weights).sum() / denom
                acq = acquisition(out).mean()
                loss = -(1.0 - cfg.kl_weight) * acq + cfg.kl_weight * kl
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                out = tree.call_from_trunk(h + delta * at, leaf_keys=[self.lm_leaf],
                                           attention_mask=trunk.attention_mask, root_spans=trunk.root_spans)
                probs = self._state_log_probs(out).exp()
                if cfg.decode_uniform_mix > 0:
                    probs = (1.0 - cfg.decode_uniform_mix) * probs + cfg.decode_uniform_mix / probs.shape[-1]
                if cfg.decoder == "joint" and self.support is not None:
                    # adjacent masked positions are drawn together, so a needed bridging pair can appear
                    proposal, _ = joint_decode(probs.clamp(min=1e-30).log(), corrupted, current,
                                               self.support.log_weights(), self.generator)
                else:
                    sampled = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1,
                                                generator=self.generator).reshape(current.shape)
                    proposal = torch.where(corrupted, sampled, current)
            out_states.append(proposal)
            out_scores.append(self.score(proposal, acquisition))
            out_feasible.append(self.feasible(proposal))
            report.design_loss, report.acquisition_loss = float(loss.detach()), float(-acq.detach())
            report.kl = float(kl.detach())
        return out_states, out_scores, out_feasible, report

    def _state_log_probs(self, out) -> torch.Tensor:
        """``(B, L, V)`` log-probabilities over the alphabet's states (members averaged in probability)."""
        logits = out.leaf_outputs[self.lm_leaf].logits[..., self.state_ids].float()  # (E, B, L, V)
        logp = torch.log_softmax(logits, -1)
        return torch.logsumexp(logp, 0) - math.log(logp.shape[0])
