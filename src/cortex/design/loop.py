"""The multi-round LaMBO-2 design loop: propose a batch, evaluate it, add it to the data, fine-tune, repeat.

:class:`DesignLoop` drives a :class:`~cortex.design.blackbox.BlackBox` (budget, deduplication, failure
records) with :class:`~cortex.design.lambo2.LaMBO2` proposals:

* round 0 evaluates the seed designs (free for any already in the history);
* each later round fine-tunes the tree on every evaluated design, starts ``num_chains`` LaMBO-2
  chains from the best designs so far (the non-dominated ones first with several objectives),
  and sends the ``batch_size`` best-scoring decoded sequences that the black box has never seen
  (deduplicated against the history and within the batch);
* after every round the full history is written atomically to ``history_path`` (parquet); a run
  started again with the same path reloads it, refits the tree and carries on from the next
  round, so nothing evaluated before is sent again.

Black boxes take integer states ``LongTensor [batch, length]`` (BoTorch / pytorch-holo convention)
and return ``[batch]`` values, or ``[batch, M]`` with several objectives. A candidate for which the
black box raises or returns NaN is recorded as failed and the run goes on; ``-inf`` marks an
infeasible design.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cortex._atomic import write_parquet_atomic
from cortex._extras import require
from cortex.design.acquisition import DesignObjective, _split
from cortex.design.blackbox import BlackBox, sequence_keys
from cortex.design.lambo2 import FeasibilityFn, LaMBO2, LaMBO2Config
from cortex.design.proposals import (
    crossover,
    elite,
    farthest_first,
    first_rows,
    offspring,
    trust_region,
)
from cortex.design.surrogate import (
    DesignData,
    FitReport,
    SurrogateSettings,
    fit_surrogate,
)
from cortex.design.transitions import TransitionSupport
from cortex.errors import DesignError


@dataclass(frozen=True)
class DesignLoopConfig:
    """Settings of a design run; validates itself.

    Args:
        batch_size: designs sent to the black box per round.
        rounds: most design rounds after the seeds (``None``: until the budget is spent).
        budget: most black-box evaluations, seeds included (``None``: no limit; then ``rounds`` is required).
        num_chains: LaMBO-2 chains run per round (default ``2 * batch_size``).
        num_parents: distinct best designs the chains start from (chains are spread over them).
        max_attempts: LaMBO-2 runs per round when too few new candidates come out.
        selection: ``chains``: each chain's final design first (one per chain, as published), then the
            best-scoring other decoded candidates; ``top``: the best-scoring candidates overall.
        method: the name recorded in the history's ``method`` column.
        parent_selection: ``best``: the ``num_parents`` best designs (as published); ``diverse``:
            farthest-first by Hamming distance among the best ``2 * num_parents``.
        trust_region_fraction: share of each batch from the trust region (single edits and
            window-repaired doubles of the best ``trust_region_parents`` designs, ranked by the
            acquisition); the diffusion chains fill the rest (0: chains only, as published).
        trust_region_parents: best designs (after parent selection) whose neighbourhood is listed.
        trust_region_candidates: most neighbourhood designs scored per round (a uniform subsample).
        crossover_fraction: share of each batch from one-point crossovers of parents with the junction
            re-decoded jointly (0: none).
        support_unseen_prob: weight of a state pair the transition support has not seen (see
            :class:`~cortex.design.transitions.TransitionSupport`).
        trust_region_repair: list the window-repaired doubles too (False: single edits only).
        trust_region_rank: ``acquisition`` (the surrogate ranks the neighbourhood) or ``random`` (a
            uniform order; the reference that shows what the surrogate adds).
        parent_rotation: among equally good trust-region parents take the least used first (False: always
            the earliest found, so a plateau is drained one neighbourhood at a time).
        support_prior: add the support's log weights of a candidate's pairs to its trust-region rank
            (unseen pairs cost ``log(support_unseen_prob)`` each), a learned prior on feasibility.
        evolution_fraction: share of each batch from genetic-algorithm offspring of the elite (uniform
            crossover and mutation, as :class:`~cortex.design.baselines.GeneticAlgorithm` breeds), with
            children holding a pair the transition support forbids dropped, deduplicated against the
            history and ranked as ``evolution_rank`` says (0: none).
        evolution_elite: best feasible designs (first objective, ties at random) the offspring come from.
        evolution_mutation_rate: expected mutated positions per child.
        evolution_crossover_prob: per-position chance a child takes the second parent's state.
        evolution_candidates: children bred per design wanted (the rank picks among them).
        evolution_ties: how the elite breaks ties of value: ``newest`` (the latest round first, so the elite
            drifts along a plateau as a GA population does) or ``random`` (any equally good design).
        evolution_rank: ``acquisition`` (the surrogate plus the support prior), ``prior`` (fewest pairs the
            support has not seen first, ties at random) or ``random``.
        portfolio: ``fixed``: the sources keep their configured shares; ``adaptive``: the trust region's and
            the offspring's shares (together as configured) are re-split each round in proportion to how
            often each source's designs beat their parent over the last ``portfolio_window`` rounds
            (``(wins + 1) / (sent + 2)``), each keeping at least ``portfolio_min_share`` of the split.
        portfolio_window: rounds the adaptive portfolio looks back.
        portfolio_min_share: least share of the adaptive split a source keeps (so it can show it improved).
        fit_every: fine-tune the tree every this many rounds (the rounds between rank with the last fit), so a
            small batch (more, shorter rounds: more feedback cycles) does not multiply the training cost.
        lambo: :class:`~cortex.design.lambo2.LaMBO2Config`.
        surrogate: :class:`~cortex.design.surrogate.SurrogateSettings`.
    """

    batch_size: int = 32
    rounds: int | None = None
    budget: int | None = None
    num_chains: int | None = None
    num_parents: int = 16
    max_attempts: int = 3
    selection: str = "chains"
    method: str = "lambo2"
    parent_selection: str = "best"
    trust_region_fraction: float = 0.0
    trust_region_parents: int = 2
    trust_region_candidates: int | None = 2048
    crossover_fraction: float = 0.0
    support_unseen_prob: float = 0.05
    support_prior: bool = True
    trust_region_repair: bool = True
    trust_region_rank: str = "acquisition"
    parent_rotation: bool = True
    evolution_fraction: float = 0.0
    evolution_elite: int = 4
    evolution_mutation_rate: float = 1.0
    evolution_crossover_prob: float = 0.2
    evolution_candidates: int = 8
    evolution_rank: str = "acquisition"
    evolution_ties: str = "newest"
    portfolio: str = "fixed"
    portfolio_window: int = 10
    portfolio_min_share: float = 0.1
    fit_every: int = 1
    lambo: LaMBO2Config = field(default_factory=LaMBO2Config)
    surrogate: SurrogateSettings = field(default_factory=SurrogateSettings)

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_parents", "max_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DesignError(f"{name}={value!r} must be an integer >= 1.")
        for name in ("rounds", "budget", "num_chains"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise DesignError(f"{name}={value!r} must be an integer >= 1 or None.")
        if self.rounds is None and self.budget is None:
            raise DesignError("Neither rounds nor budget bounds the design run; set one of them (e.g. budget=1000).")
        if self.trust_region_rank not in ("acquisition", "random"):
            raise DesignError(f"trust_region_rank={self.trust_region_rank!r} is not one of acquisition, random.")
        if self.parent_selection not in ("best", "diverse"):
            raise DesignError(f"parent_selection={self.parent_selection!r} is not one of best, diverse.")
        for name in ("trust_region_fraction", "crossover_fraction", "evolution_fraction", "evolution_crossover_prob",
                     "portfolio_min_share"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise DesignError(f"{name}={value!r} must be in [0, 1].")
        if self.shared_fraction > 1.0 + 1e-9:
            raise DesignError(f"trust_region_fraction + crossover_fraction + evolution_fraction = "
                              f"{self.shared_fraction} exceeds 1.")
        for name in ("evolution_elite", "evolution_candidates", "portfolio_window", "fit_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DesignError(f"{name}={value!r} must be an integer >= 1.")
        if not (isinstance(self.evolution_mutation_rate, (int, float)) and self.evolution_mutation_rate > 0):
            raise DesignError(f"evolution_mutation_rate={self.evolution_mutation_rate!r} must be > 0.")
        if self.evolution_rank not in ("acquisition", "prior", "random"):
            raise DesignError(f"evolution_rank={self.evolution_rank!r} is not one of acquisition, prior, random.")
        if self.evolution_ties not in ("newest", "random"):
            raise DesignError(f"evolution_ties={self.evolution_ties!r} is not one of newest, random.")
        if self.portfolio not in ("fixed", "adaptive"):
            raise DesignError(f"portfolio={self.portfolio!r} is not one of fixed, adaptive.")
        if isinstance(self.trust_region_parents, bool) or not isinstance(self.trust_region_parents, int) \
                or self.trust_region_parents < 1:
            raise DesignError(f"trust_region_parents={self.trust_region_parents!r} must be an integer >= 1.")
        if self.trust_region_candidates is not None and (isinstance(self.trust_region_candidates, bool) or not
                                                         isinstance(self.trust_region_candidates, int)
                                                         or self.trust_region_candidates < 1):
            raise DesignError(f"trust_region_candidates={self.trust_region_candidates!r} must be an integer >= 1 "
                              "or None.")
        if not (isinstance(self.support_unseen_prob, (int, float)) and 0.0 < self.support_unseen_prob <= 1.0):
            raise DesignError(f"support_unseen_prob={self.support_unseen_prob!r} must be in (0, 1].")
        if self.selection not in ("chains", "top"):
            raise DesignError(f"selection={self.selection!r} is not one of chains, top.")
        if not isinstance(self.method, str) or not self.method:
            raise DesignError(f"method={self.method!r} must be a non-empty name, e.g. 'lambo2'.")

    @property
    def chains(self) -> int:
        return self.num_chains if self.num_chains is not None else 2 * self.batch_size

    @property
    def shared_fraction(self) -> float:
        """Share of a batch taken by the trust region, crossover and offspring (the chains fill the rest)."""
        return self.trust_region_fraction + self.crossover_fraction + self.evolution_fraction


@dataclass
class RoundReport:
    """One round of the loop.

    Attributes:
        round: 0 for the seeds, then 1, 2, ...
        evaluations: black-box evaluations spent so far (all rounds).
        sent: designs this round sent.
        best: best feasible value so far (first objective with several), ``-inf`` if none.
        median: median feasible value of this round's designs (NaN if none was feasible).
        feasible_fraction: fraction of this round's designs that were feasible.
        failed: designs of this round whose evaluation failed.
        seconds: wall time of the round (fit + proposals + evaluation).
        fit: the surrogate fit of this round.
    """

    round: int
    evaluations: int
    sent: int
    best: float
    median: float
    feasible_fraction: float
    failed: int
    seconds: float
    fit: FitReport | None = None


@dataclass
class DesignResult:
    """The outcome of a design run.

    Attributes:
        best_states: ``[L]`` best feasible design (first objective), or ``None``.
        best_value: its value (``-inf`` if none was feasible).
        evaluations: black-box evaluations spent.
        rounds: per-round :class:`RoundReport` (this run's rounds; a resumed run starts after the saved ones).
        pareto_states: ``[P, L]`` non-dominated feasible designs (all objectives).
        pareto_values: ``[P, M]`` their values.
        history_path: where the history parquet is, if any.
        black_box: the :class:`BlackBox` with the full history.
    """

    best_states: torch.Tensor | None
    best_value: float
    evaluations: int
    rounds: list[RoundReport]
    pareto_states: torch.Tensor
    pareto_values: torch.Tensor
    history_path: Path | None
    black_box: BlackBox


class _VectorRecorder:
    """Wraps a black box with ``M`` objectives: keeps each design's vector, hands BlackBox one number.

    The number is the first objective, NaN if any objective is NaN, ``-inf`` if any is infinite.
    """

    def __init__(self, fn: Callable, num_objectives: int):
        self.fn = fn
        self.num_objectives = num_objectives
        self.vectors: dict[bytes, tuple[float, ...]] = {}
        self.contract_error: str | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.as_tensor(self.fn(x)).detach().to("cpu", torch.float64)
        M = self.num_objectives
        if M == 1 and out.dim() == 2 and out.shape[1] == 1:
            out = out[:, 0]
        expected = (len(x),) if M == 1 else (len(x), M)
        if tuple(out.shape) != expected:
            # a broken contract must stop the run, but BlackBox records whatever this call raises as a
            # failed evaluation; so note it and hand BlackBox a wrong shape, which it refuses loudly
            self.contract_error = (
                f"The black box returned shape {tuple(out.shape)} for {len(x)} designs; with {M} objective(s) it "
                f"must return {list(expected)}."
            )
            return torch.zeros(len(x) + 1, dtype=torch.float64)
        out = out.reshape(len(x), M)
        for key, row in zip(sequence_keys(x), out.tolist()):
            self.vectors[key] = tuple(row)
        nan = torch.isnan(out).any(-1)
        inf = torch.isinf(out).any(-1)
        first = out[:, 0].clone()
        first = torch.where(inf, torch.full_like(first, -math.inf), first)
        return torch.where(nan, torch.full_like(first, math.nan), first)


class DesignLoop:
    """Multi-round LaMBO-2 against a black box (see the module docstring).

    Args:
        tree: the NeuralTree surrogate (a denoising leaf and the objective's leaves); trained in place.
        objective: which leaves are objectives (one per black-box output, in order) and constraints
            (two-class classifiers trained on feasible vs infeasible).
        black_box: ``states [B, L] -> [B]`` (or ``[B, M]``); any callable, may fan out anywhere.
        alphabet: one character per state.
        length: sequence length ``L``.
        config: :class:`DesignLoopConfig`.
        feasibility_fn: optional ``states -> bool [B]`` known constraint; proposals always satisfy it.
        is_mutable: ``[L]`` bool, positions that may change (default all).
        history_path: parquet file of the history; an existing file is resumed.
        seed: seeds training, chains and sampling.
    """

    def __init__(
        self,
        tree,
        objective: DesignObjective,
        black_box: Callable[[torch.Tensor], torch.Tensor],
        *,
        alphabet: str,
        length: int,
        config: DesignLoopConfig,
        feasibility_fn: FeasibilityFn | None = None,
        is_mutable: torch.Tensor | None = None,
        history_path: str | os.PathLike | None = None,
        seed: int = 0,
    ) -> None:
        if not callable(black_box):
            raise DesignError(f"black_box={black_box!r} is not callable; pass a function states [B, L] -> values [B].")
        self.config = config
        self.objective = objective
        self.tree = tree
        self.length = int(length)
        specs = tree.config.leaf_specs()
        for name in objective.constraints:
            leaf, c = _split(name, "constraints")
            if leaf in specs and getattr(specs[leaf], "num_classes", 2) != 2:
                raise DesignError(
                    f"constraint leaf {leaf!r} has {specs[leaf].num_classes} classes; the design loop trains "
                    "constraint leaves on feasible vs infeasible, so give it num_classes=2."
                )
        self.lambo = LaMBO2(tree, objective, alphabet=alphabet, config=config.lambo,
                            feasibility_fn=feasibility_fn, seed=seed)
        if self.lambo.max_len is not None and self.length > self.lambo.max_len:
            raise DesignError(f"length={length} exceeds the tree root's max_len={self.lambo.max_len}.")
        self.recorder = _VectorRecorder(black_box, objective.num_objectives)
        self.black_box = BlackBox(self.recorder, length=self.length, num_states=len(alphabet),
                                  budget=config.budget, alphabet=alphabet)
        self.is_mutable = self.lambo._mutable(is_mutable, 1, self.length)[0] if is_mutable is not None else None
        self.history_path = Path(history_path) if history_path is not None else None
        self.generator = torch.Generator().manual_seed(int(seed))
        self.acquisition_values: dict[bytes, float] = {}
        self.support = TransitionSupport(len(alphabet), config.support_unseen_prob)
        self.lambo.support = self.support
        self._support_count = 0  # history records already added to the support
        self.proposal_sources: dict[str, int] = {}  # source -> designs proposed (trust_region, evolution, ...)
        self.parent_uses: dict[bytes, int] = {}  # trust-region parent -> proposals drawn from it
        # proposal key -> (source, its parent's value); after evaluation, per-round (source -> [sent, wins])
        self._pending: dict[bytes, tuple[str, float]] = {}
        self.source_record: list[dict[str, list[int]]] = []
        self.next_round = 1
        self.fitted = False
        if self.history_path is not None and self.history_path.exists():
            self._resume(self.history_path)

    # ------------------------------------------------------------------------------ persistence
    def _resume(self, path: Path) -> None:
        import pandas as pd

        frame = pd.read_parquet(path)
        frame = frame[frame["method"] == self.config.method]
        self.black_box.load_history(frame)
        M = self.objective.num_objectives
        for row in frame.itertuples(index=False):
            key = sequence_keys(torch.as_tensor(np.asarray(row.states, dtype=np.int64))[None])[0]
            if M > 1 and "objectives" in frame.columns and row.objectives is not None:
                self.recorder.vectors[key] = tuple(float(v) for v in row.objectives)
            elif M == 1:
                self.recorder.vectors[key] = (float(row.value),)
        if len(frame):
            self.next_round = int(frame["round"].max()) + 1

    def history_frame(self):
        """The history as a DataFrame: BlackBox's columns plus ``acquisition`` and, with several
        objectives, ``objectives`` (the full vector)."""
        frame = self.black_box.to_dataframe()
        keys = [sequence_keys(torch.tensor(r.states, dtype=torch.long)[None])[0] for r in self.black_box.history]
        frame["acquisition"] = [self.acquisition_values.get(k, math.nan) for k in keys]
        if self.objective.num_objectives > 1:
            frame["objectives"] = [list(self.recorder.vectors.get(k, (math.nan,) * self.objective.num_objectives))
                                   for k in keys]
        return frame

    def save(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write the history parquet atomically (temp file, fsync, rename)."""
        path = Path(path) if path is not None else self.history_path
        if path is None:
            return None
        write_parquet_atomic(self.history_frame(), path)
        return path

    # ------------------------------------------------------------------------------ data
    def data(self) -> DesignData:
        """Every evaluated design as surrogate training data."""
        states = self.black_box.states_tensor()
        M = self.objective.num_objectives
        values = torch.full((len(states), M), math.nan, dtype=torch.float64)
        for i, (record, key) in enumerate(zip(self.black_box.history, sequence_keys(states))):
            if record.failed:
                continue
            vector = self.recorder.vectors.get(key, (record.value,) + (math.nan,) * (M - 1))
            values[i] = torch.tensor(vector, dtype=torch.float64)
        rounds = torch.tensor([r.round for r in self.black_box.history], dtype=torch.long)
        return DesignData(ids=self.lambo.ids(states), values=values, rounds=rounds)

    def _parents(self, data: DesignData, states: torch.Tensor) -> torch.Tensor:
        """Distinct best feasible designs ``[P, L]``: non-dominated layers first, then by first objective."""
        feasible = data.feasible
        if not bool(feasible.any()):
            raise DesignError(
                "No evaluated design is feasible, so LaMBO-2 has nothing to start from; seed the run with designs "
                "the black box scores finitely."
            )
        pool, values = states[feasible], data.values[feasible]
        signs = torch.tensor([-1.0 if n in self.objective.minimize else 1.0 for n in self.objective.objectives],
                             dtype=values.dtype)
        values = values * signs
        n = self.config.num_parents
        pool_size = n if self.config.parent_selection == "best" else 2 * n
        ranks = _pareto_ranks(values, max_layers=pool_size)
        order = np.lexsort((-values[:, 0].numpy(), ranks.numpy()))
        best = pool[torch.as_tensor(order[:pool_size])]
        if self.config.parent_selection == "diverse":
            best = best[farthest_first(best, n)]
        return best

    # ------------------------------------------------------------------------------ rounds
    def run(self, seeds: torch.Tensor | Sequence[str] | None = None,
            on_round: Callable[[RoundReport, "DesignLoop"], None] | None = None) -> DesignResult:
        """Evaluate ``seeds`` (round 0) then run rounds until ``rounds`` or the budget is spent.

        ``seeds`` may be omitted when the history already holds evaluated designs (a resumed run).
        ``on_round(report, loop)`` is called after each round, e.g. to print a table row.
        """
        reports: list[RoundReport] = []
        if seeds is not None:
            seed_states = self.lambo.to_states(seeds)
            if seed_states.shape[1] != self.length:
                raise DesignError(f"seeds have length {seed_states.shape[1]} but the design length is {self.length}.")
            start = time.perf_counter()
            before = self.black_box.evaluations
            result = self._evaluate(seed_states, 0)
            if result.num_sent or self.next_round == 1:
                reports.append(self._report(0, result, before, time.perf_counter() - start, None))
                self.save()
                if on_round is not None:
                    on_round(reports[-1], self)
        if self.black_box.evaluations == 0:
            raise DesignError("There is nothing to design from: pass seeds (or a history_path holding evaluated designs).")
        rnd = max(self.next_round, 1)
        done = 0
        while not self.black_box.exhausted and (self.config.rounds is None or done < self.config.rounds):
            start = time.perf_counter()
            fit = self.fit() if not self.fitted or done % self.config.fit_every == 0 else None
            proposals = self.propose(self.config.batch_size)
            if len(proposals) == 0:
                break  # the chains found nothing new: the search has converged
            before = self.black_box.evaluations
            result = self._evaluate(proposals, rnd)
            self._credit(proposals, result)
            reports.append(self._report(rnd, result, before, time.perf_counter() - start, fit))
            self.save()
            if on_round is not None:
                on_round(reports[-1], self)
            rnd += 1
            done += 1
        self.next_round = rnd
        return self.result(reports)

    def _evaluate(self, states: torch.Tensor, rnd: int):
        try:
            return self.black_box.evaluate(states, round=rnd, method=self.config.method)
        except DesignError:
            if self.recorder.contract_error is not None:
                raise DesignError(self.recorder.contract_error) from None
            raise
        finally:
            self._update_support()

    def _update_support(self) -> None:
        """Teach the transition support every design evaluated since the last call (failed ones left out)."""
        new = [r for r in self.black_box.history[self._support_count:] if not r.failed]
        self._support_count = len(self.black_box.history)
        if new:
            self.support.update(torch.tensor([r.states for r in new], dtype=torch.long),
                                torch.tensor([r.feasible for r in new], dtype=torch.bool))

    def fit(self) -> FitReport:
        """Train (first call: ``initial_steps``) or fine-tune the tree on every evaluated design."""
        settings = self.config.surrogate
        data = self.data()
        check_every = None
        if not self.fitted:
            steps = settings.initial_steps
        elif settings.finetune_epochs > 0:
            # train to convergence on all the data: whole passes, checked once per pass, early-stopped
            per_epoch = max(1, math.ceil(int((~data.failed).sum()) / settings.batch_size))
            steps = min(settings.max_finetune_steps, math.ceil(settings.finetune_epochs * per_epoch))
            check_every = min(per_epoch, settings.max_finetune_steps)
        else:
            steps = settings.finetune_steps
        report = fit_surrogate(self.tree, data, self.objective, steps=steps, settings=settings,
                               lm_leaf=self.lambo.lm_leaf, root=self.lambo.root, generator=self.generator,
                               check_every=check_every)
        self.fitted = True
        return report

    def propose(self, n: int) -> torch.Tensor:
        """Up to ``n`` new designs ``[n, L]`` the black box has not seen.

        The trust region, crossover and offspring take their shares of the batch first (see
        :meth:`shares`); LaMBO-2's diffusion chains fill the rest, and the trust region (then the
        offspring) top up what the chains leave.
        """
        cfg = self.config
        data = self.data()
        states = self.black_box.states_tensor()
        parents = self._parents(data, states)
        if self.black_box.remaining is not None:
            n = min(n, self.black_box.remaining)
        share = self.shares(n)
        # the acquisition (a forward pass over every feasible design) only when some source ranks by it
        needed = (share["trust_region"] and cfg.trust_region_rank == "acquisition") or share["crossover"] \
            or (share["evolution"] and cfg.evolution_rank == "acquisition") or cfg.shared_fraction < 1.0
        acquisition = self.lambo.acquisition(states[data.feasible]) if needed else None
        chosen: list[torch.Tensor] = []
        keys: set[bytes] = set()

        def take(ranked_scores: tuple, limit: int, source: str) -> None:
            # (ranked, scores) or (ranked, scores, the value of each one's parent)
            ranked, scores = ranked_scores[:2]
            if len(ranked) == 0:
                return
            novel = ~self.black_box.seen(ranked)
            refs = ranked_scores[2].tolist() if len(ranked_scores) > 2 else [math.nan] * len(ranked)
            for row, score, key, ok, ref in zip(ranked, scores.tolist(), sequence_keys(ranked), novel.tolist(), refs):
                if len(chosen) >= limit:
                    break
                if ok and key not in keys:
                    keys.add(key)
                    chosen.append(row)
                    self.acquisition_values[key] = score
                    self._pending[key] = (source, ref)
                    self.proposal_sources[source] = self.proposal_sources.get(source, 0) + 1

        region = self._trust_region(data, states, acquisition) if share["trust_region"] else None
        if share["trust_region"]:
            take(region, share["trust_region"], "trust_region")
        if share["crossover"]:
            take(self._crossover(parents, acquisition, 4 * share["crossover"]), len(chosen) + share["crossover"],
                 "crossover")
        brood = self._evolution(data, states, acquisition, share["evolution"]) if share["evolution"] else None
        if brood is not None:
            take(brood, len(chosen) + share["evolution"], "evolution")
        if cfg.shared_fraction < 1.0:
            chains = parents[torch.arange(cfg.chains) % len(parents)]
            for _ in range(cfg.max_attempts):
                if len(chosen) >= n:
                    break
                take(self._chains(chains, acquisition), n, "chains")
        for topup in (region, brood):
            if len(chosen) < n and topup is not None:
                take(topup, n, "trust_region" if topup is region else "evolution")
        return torch.stack(chosen) if chosen else states.new_zeros(0, self.length)

    def shares(self, n: int) -> dict[str, int]:
        """Designs of a batch of ``n`` per source: ``trust_region``, ``crossover``, ``evolution``.

        ``portfolio="adaptive"`` re-splits the trust region's and the offspring's joint share by each
        source's recent rate of designs that beat their parent (see :class:`DesignLoopConfig`).
        """
        cfg = self.config
        fractions = {"trust_region": cfg.trust_region_fraction, "crossover": cfg.crossover_fraction,
                     "evolution": cfg.evolution_fraction}
        if cfg.portfolio == "adaptive" and cfg.trust_region_fraction > 0 and cfg.evolution_fraction > 0:
            joint = cfg.trust_region_fraction + cfg.evolution_fraction
            rates = {s: self.win_rate(s) for s in ("trust_region", "evolution")}
            total = sum(rates.values())
            split = {s: max(r / total, cfg.portfolio_min_share) for s, r in rates.items()}
            norm = sum(split.values())
            fractions.update({s: joint * v / norm for s, v in split.items()})
        return {s: round(f * n) for s, f in fractions.items()}

    def win_rate(self, source: str) -> float:
        """``(wins + 1) / (sent + 2)`` of ``source`` over the last ``portfolio_window`` rounds: a win is a
        design whose value beat its parent's (first objective)."""
        sent = wins = 0
        for record in self.source_record[-self.config.portfolio_window:]:
            s, w = record.get(source, (0, 0))
            sent, wins = sent + s, wins + w
        return (wins + 1) / (sent + 2)

    def _credit(self, proposals: torch.Tensor, result) -> None:
        """Record, per source, how many designs this round sent and how many beat their parent."""
        record: dict[str, list[int]] = {}
        sign = -1.0 if self.objective.objectives[0] in self.objective.minimize else 1.0
        for key, sent, value in zip(sequence_keys(proposals), result.sent.tolist(), result.values.tolist()):
            source, ref = self._pending.pop(key, ("", math.nan))
            if not sent or not source:
                continue
            counts = record.setdefault(source, [0, 0])
            counts[0] += 1
            counts[1] += int(math.isfinite(value) and math.isfinite(ref) and sign * value > sign * ref)
        self._pending.clear()
        self.source_record.append(record)

    def _evolution(self, data: DesignData, states: torch.Tensor, acquisition,
                   n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Offspring of the elite (see :func:`offspring`): ``(children, scores, parent values)``, best first.

        Children with a pair the support forbids, copies of each other and designs already evaluated are
        dropped before the rank, so no evaluation goes to a design the history already rules out.
        """
        cfg = self.config
        mutable = self.is_mutable if self.is_mutable is not None else torch.ones(self.length, dtype=torch.bool)
        feasible = torch.nonzero(data.feasible).flatten()
        value = data.values[feasible, 0].float()
        if self.objective.objectives[0] in self.objective.minimize:
            value = -value
        age = None
        if data.rounds is not None and cfg.evolution_ties == "newest":
            age = -data.rounds[feasible]
        top = elite(value, cfg.evolution_elite, self.generator, age=age)
        parents, parent_values = states[feasible[top]], data.values[feasible[top], 0].float()
        p_mut = min(cfg.evolution_mutation_rate / max(int(mutable.sum()), 1), 0.5)
        children, first = offspring(parents, cfg.evolution_candidates * max(n, 1), mutable,
                                    self.support.num_states, mutation_prob=p_mut,
                                    crossover_prob=cfg.evolution_crossover_prob, generator=self.generator)
        keep = self.support.plausible(children)
        if len(children):
            keep &= ~self.black_box.seen(children)
        children, first = children[keep], first[keep]
        firsts = first_rows(children)
        children, first = children[firsts], first[firsts]
        if cfg.evolution_rank == "acquisition":
            feasible_rows = self.lambo.feasible(children) if len(children) else torch.zeros(0, dtype=torch.bool)
            children, first = children[feasible_rows], first[feasible_rows]
            ranked, scores, order = self._rank(children, acquisition, with_order=True)
            return ranked, scores, parent_values[first[order]]
        order = torch.randperm(len(children), generator=self.generator)
        if cfg.evolution_rank == "prior" and len(children):
            unseen = (~self.support.allowed[children[:, :-1], children[:, 1:]]).sum(-1)
            order = order[torch.argsort(unseen[order], stable=True)]
        return children[order], torch.full((len(children),), math.nan), parent_values[first[order]]

    def _chains(self, chains: torch.Tensor, acquisition) -> tuple[torch.Tensor, torch.Tensor]:
        """LaMBO-2 candidates from ``chains``, ranked as ``config.selection`` says."""
        result = self.lambo.optimize(chains, is_mutable=self.is_mutable, acquisition=acquisition)
        ranked, scores = result.ranked_candidates()
        if self.config.selection == "chains":
            # as published: each chain's final design (best first), then the other candidates
            moved = (result.states != chains).any(-1)
            order = torch.argsort(result.scores[moved], descending=True, stable=True)
            ranked = torch.cat([result.states[moved][order], ranked])
            scores = torch.cat([result.scores[moved][order], scores])
        return ranked, scores

    def _rank(self, candidates: torch.Tensor, acquisition, with_order: bool = False):
        """Candidates best first by acquisition (plus the support's log prior), keeping feasible ones.

        Returns ``(ranked, scores)``, and the order as indices into ``candidates`` with ``with_order``
        (the caller has then already kept only the feasible ones).
        """
        if len(candidates) == 0:
            return (candidates, torch.zeros(0), torch.zeros(0, dtype=torch.long)) if with_order \
                else (candidates, torch.zeros(0))
        if not with_order:
            candidates = candidates[self.lambo.feasible(candidates)]
        scores = torch.cat([self.lambo.score(chunk, acquisition) for chunk in candidates.split(4096)]) \
            if len(candidates) else torch.zeros(0)
        rank_by = scores
        if self.config.support_prior and len(candidates):
            w = self.support.log_weights()
            rank_by = scores + w[candidates[:, :-1], candidates[:, 1:]].sum(-1)
        order = torch.argsort(rank_by, descending=True, stable=True)
        return (candidates[order], scores[order], order) if with_order else (candidates[order], scores[order])

    def _trust_region(self, data: DesignData, states: torch.Tensor,
                      acquisition) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Single edits and window-repaired doubles of the best designs, ranked (see :func:`trust_region`):
        ``(candidates, scores, parent values)``.

        Parents are the best feasible designs (first objective), the least used first among equal
        values: on a plateau the search walks over the equally good designs instead of draining one
        neighbourhood, which is how it crosses to a design with an improving neighbour.
        """
        mutable = self.is_mutable if self.is_mutable is not None else torch.ones(self.length, dtype=torch.bool)
        feasible = torch.nonzero(data.feasible).flatten()
        keys = sequence_keys(states[feasible])
        uses = np.array([self.parent_uses.get(k, 0) if self.config.parent_rotation else 0 for k in keys])
        value = data.values[feasible, 0].numpy()
        if self.objective.objectives[0] in self.objective.minimize:
            value = -value
        order = np.lexsort((np.arange(len(keys)), uses, -value))[: self.config.trust_region_parents]
        top = states[feasible[torch.as_tensor(order)]]
        parent_values = data.values[feasible[torch.as_tensor(order)], 0].float()
        cands, owner = trust_region(top, mutable, self.support, self.black_box.seen,
                                max_candidates=self.config.trust_region_candidates, generator=self.generator,
                                repair_doubles=self.config.trust_region_repair)
        share = max(1, round(self.config.trust_region_fraction * self.config.batch_size / len(top)))
        for i in order:
            self.parent_uses[keys[i]] = self.parent_uses.get(keys[i], 0) + share
        if self.config.trust_region_rank == "random":
            perm = torch.randperm(len(cands), generator=self.generator)
            return cands[perm], torch.full((len(cands),), math.nan), parent_values[owner[perm]]
        if len(cands):
            ok = self.lambo.feasible(cands)
            cands, owner = cands[ok], owner[ok]
        ranked, scores, order = self._rank(cands, acquisition, with_order=True)
        return ranked, scores, parent_values[owner[order]]

    def _crossover(self, parents: torch.Tensor, acquisition, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        mutable = self.is_mutable if self.is_mutable is not None else torch.ones(self.length, dtype=torch.bool)
        children = crossover(parents, n, mutable, self.support, generator=self.generator)
        return self._rank(children, acquisition)

    def _report(self, rnd: int, result, before: int, seconds: float, fit: FitReport | None) -> RoundReport:
        values = result.values[result.sent]
        finite = values[torch.isfinite(values)]
        best = self.black_box.best()
        return RoundReport(
            round=rnd, evaluations=self.black_box.evaluations, sent=self.black_box.evaluations - before,
            best=best[1] if best else -math.inf,
            median=float(finite.median()) if len(finite) else math.nan,
            feasible_fraction=float(len(finite)) / max(int(result.sent.sum()), 1),
            failed=int(result.failed[result.sent].sum()), seconds=seconds, fit=fit,
        )

    def result(self, reports: list[RoundReport]) -> DesignResult:
        """The :class:`DesignResult` of the history so far."""
        best = self.black_box.best()
        data = self.data()
        states = self.black_box.states_tensor()
        feasible = data.feasible
        values = data.values[feasible]
        pareto_states, pareto_values = states[feasible][:0], values[:0]
        if len(values):
            signs = torch.tensor([-1.0 if n in self.objective.minimize else 1.0 for n in self.objective.objectives],
                                 dtype=values.dtype)
            front = _pareto_ranks(values * signs, max_layers=1) == 0
            pareto_states, pareto_values = states[feasible][front], values[front]
        return DesignResult(
            best_states=best[0] if best else None, best_value=best[1] if best else -math.inf,
            evaluations=self.black_box.evaluations, rounds=reports, pareto_states=pareto_states,
            pareto_values=pareto_values, history_path=self.history_path, black_box=self.black_box,
        )


def _pareto_ranks(values: torch.Tensor, max_layers: int | None = None) -> torch.Tensor:
    """``(N,)`` non-domination layer of each row of ``values`` ``(N, M)`` (maximized); 0 = Pareto front.

    Equal value vectors share a layer. Rows past ``max_layers`` layers get rank ``max_layers``.
    """
    require("botorch", "design")
    from botorch.utils.multi_objective.pareto import is_non_dominated

    if values.shape[1] == 1:  # one objective: the layers are the distinct values, best first
        distinct = torch.unique(values[:, 0], sorted=True)  # ascending
        ranks = len(distinct) - 1 - torch.searchsorted(distinct, values[:, 0].contiguous())
        return ranks if max_layers is None else ranks.clamp(max=max_layers)
    ranks = torch.full((len(values),), max_layers if max_layers is not None else -1, dtype=torch.long)
    remaining = torch.arange(len(values))
    layer = 0
    while len(remaining) and (max_layers is None or layer < max_layers):
        front = is_non_dominated(values[remaining], deduplicate=False)
        ranks[remaining[front]] = layer
        remaining = remaining[~front]
        layer += 1
    return ranks
