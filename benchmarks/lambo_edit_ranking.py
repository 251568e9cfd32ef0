"""Does the design surrogate rank edits? AUROC of the acquisition at a run's current best design.

    python benchmarks/lambo_edit_ranking.py --variant 32,32,4,4,4 --seeds 2 --at 1024

For each Ehrlich instance (``--first-seed``.. , tuning instances 0-4 by default) it runs the default
preset of ``cortex quickstart`` to ``--at`` evaluations, takes the best design found, and lists every
single mutant and every adjacent-double mutant of it (a uniform subsample of ``--max-doubles`` doubles).
Then, for each surrogate variant, it trains a fresh tree on that same history (the first fit and one
round's fine-tune, as the loop does) and reports, one JSON line per (variant, instance):

* ``auroc_single`` / ``auroc_double``: AUROC of the ranking score for improving vs non-improving mutants
  (infeasible mutants count as non-improving); 0.5 is a random ranking;
* ``auroc_single_acq`` / ``auroc_double_acq``: the same with the acquisition alone (without the
  transition-support prior the trust region adds);
* ``improving_single`` / ``improving_double``: how many mutants improve;
* ``top_k_feasible``: share of the ``--k`` best-ranked mutants (singles and doubles together, what a
  round would send) that are feasible; ``top_k_improving``: how many of them improve;
* ``fit_seconds``, ``score_seconds`` and the machine.

``--offspring`` asks the same of the ``offspring`` preset (surrogate-ranked GA children): it runs that preset to
``--at`` evaluations, breeds the round's pool of children of the elite as the loop does (support-filtered, never
seen), evaluates every child, and reports per instance, for the rank the loop uses (acquisition plus support
prior), the acquisition alone and the ensemble mean: AUROC for children that beat their parent
(``auroc_improving_*``) and for children at least as good as their parent (``auroc_not_worse_*``), and how many of
the ``--k`` best-ranked children are not worse, against ``--k`` times the pool's rate (a random pick).

Variants: ``default``; ``no_feasibility`` (acquisition without the p(feasible) factor); ``no_prior``
(without the support prior); ``fixed_steps`` (40 fine-tune steps instead of epochs with early
stopping); ``ensemble_1`` / ``ensemble_8``; ``kernel_5``; ``transformer`` (transformer root); ``random``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from cortex.design import Ehrlich
from cortex.design.job import ehrlich_design_loop
from cortex.design.proposals import single_edits
from cortex.design.quickstart import quickstart_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

VARIANTS = {
    "default": {},
    "no_feasibility": {"tree": {"feasibility_leaf": False}},
    "no_prior": {"loop": {"support_prior": False}},
    "fixed_steps": {"surrogate": {"finetune_epochs": 0.0}},
    "ensemble_1": {"tree": {"ensemble_size": 1}},
    "ensemble_8": {"tree": {"ensemble_size": 8}},
    "kernel_5": {"tree": {"kernel_size": 5}},
    "transformer": {"tree": {"root_kind": "transformer"}},
    "random": {},
}


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); ``None`` without both classes."""
    pos, neg = scores[positive].double(), scores[~positive].double()
    if len(pos) == 0 or len(neg) == 0:
        return None
    ranks = torch.empty(len(scores), dtype=torch.float64)
    order = torch.argsort(scores.double())
    sorted_scores = scores.double()[order]
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # average ranks over ties
    uniq, inverse, counts = torch.unique(sorted_scores, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks[order])
    ranks[order] = (sums / counts)[inverse]
    return float((ranks[positive].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def adjacent_doubles(parent: torch.LongTensor, num_states: int, limit: int, generator) -> torch.LongTensor:
    """Up to ``limit`` designs differing from ``parent`` at two adjacent positions (uniform subsample)."""
    L, V = len(parent), num_states
    i = torch.arange(L - 1).repeat_interleave((V - 1) ** 2)
    a = torch.arange(1, V).repeat_interleave(V - 1).repeat(L - 1)
    b = torch.arange(1, V).repeat((V - 1) * (L - 1))
    if len(i) > limit:
        pick = torch.randperm(len(i), generator=generator)[:limit]
        i, a, b = i[pick], a[pick], b[pick]
    out = parent.expand(len(i), L).clone()
    rows = torch.arange(len(i))
    out[rows, i] = (parent[i] + a) % V
    out[rows, i + 1] = (parent[i + 1] + b) % V
    return out


def with_overrides(config, overrides: dict):
    for section, fields in overrides.items():
        config = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **fields)})
    return config


def offspring_row(problem, seed: int, at: int, k: int, pool_rounds: int) -> dict:
    """The ``--offspring`` line of one instance (see the module docstring)."""
    loop = ehrlich_design_loop(problem, quickstart_config(seed=seed, preset="offspring"), budget=at)
    loop.run(problem.random_feasible(128, seed=10_000 + seed))
    data, states = loop.data(), loop.black_box.states_tensor()
    acquisition = loop.lambo.acquisition(states[data.feasible])
    # the pool of ``pool_rounds`` rounds, bred and filtered exactly as the loop's offspring source does
    children, _, parent_values = loop._evolution(data, states, acquisition, pool_rounds * loop.config.batch_size)
    truth = problem(children).double()
    acq = loop.lambo.score(children, acquisition)
    w = loop.support.log_weights()
    ranks = {"rank": acq + w[children[:, :-1], children[:, 1:]].sum(-1), "acquisition": acq,
             "mean": loop.lambo.predict(children)[..., 0].mean(0)}
    improving = truth > parent_values.double() + 1e-9
    not_worse = truth >= parent_values.double() - 1e-9
    row = {"mode": "offspring", "problem": problem.config.variant, "instance": seed, "at": at,
           "best": loop.black_box.best()[1], "pool": len(children), "improving": int(improving.sum()),
           "not_worse": int(not_worse.sum()), "feasible": round(float(torch.isfinite(truth).double().mean()), 4),
           "random_top_k_not_worse": round(k * float(not_worse.double().mean()), 2)}
    for name, score in ranks.items():
        top = torch.argsort(score, descending=True)[:k]
        row[f"auroc_improving_{name}"] = auroc(score, improving)
        row[f"auroc_not_worse_{name}"] = auroc(score, not_worse)
        row[f"top_k_not_worse_{name}"] = int(not_worse[top].sum())
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="32,32,4,4,4")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0, help="first instance (0-4: the tuning instances)")
    parser.add_argument("--at", type=int, default=1024, help="evaluations of the run whose best design is probed")
    parser.add_argument("--max-doubles", type=int, default=8000)
    parser.add_argument("--k", type=int, default=32, help="proposals per round (top-k share)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated from {list(VARIANTS)}")
    parser.add_argument("--offspring", action="store_true",
                        help="rank the offspring preset's GA children instead of the default preset's mutants")
    parser.add_argument("--pool-rounds", type=int, default=16, help="--offspring: pool of this many rounds' children")
    args = parser.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    torch.set_num_threads(1)
    info = machine()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        problem = Ehrlich.from_variant(args.variant, random_seed=seed)
        if args.offspring:
            row = offspring_row(problem, seed, args.at, args.k, args.pool_rounds)
            print(json.dumps({**row, "load_average": [round(v, 2) for v in os.getloadavg()], "machine": info}),
                  flush=True)
            continue
        run = ehrlich_design_loop(problem, quickstart_config(seed=seed), budget=args.at)
        run.run(problem.random_feasible(128, seed=10_000 + seed))
        frame = run.black_box.to_dataframe()
        parent, best = run.black_box.best()
        g = torch.Generator().manual_seed(seed)
        singles = single_edits(parent, torch.ones(len(parent), dtype=torch.bool), problem.num_states)
        doubles = adjacent_doubles(parent, problem.num_states, args.max_doubles, g)
        cands = torch.cat([singles, doubles])
        values = problem(cands)
        improving = values > best + 1e-9
        feasible = torch.isfinite(values)
        is_single = torch.arange(len(cands)) < len(singles)
        for name in names:
            config = with_overrides(quickstart_config(seed=seed), VARIANTS[name])
            loop = ehrlich_design_loop(problem, config, budget=args.at)
            loop.black_box.load_history(frame)
            loop._update_support()
            start = time.perf_counter()
            loop.fit()
            loop.fit()  # the first fit, then one round's fine-tune (epochs or fixed steps, as configured)
            fit_seconds = time.perf_counter() - start
            start = time.perf_counter()
            data = loop.data()
            acquisition = loop.lambo.acquisition(loop.black_box.states_tensor()[data.feasible])
            acq = torch.cat([loop.lambo.score(c, acquisition) for c in cands.split(4096)])
            rank_by = acq.clone()
            if config.loop.support_prior:
                w = loop.support.log_weights()
                rank_by = acq + w[cands[:, :-1], cands[:, 1:]].sum(-1)
            if name == "random":
                rank_by = acq = torch.rand(len(cands), generator=g)
            score_seconds = time.perf_counter() - start
            top = torch.argsort(rank_by, descending=True)[: args.k]
            row = {
                "variant_name": name, "problem": problem.config.variant, "instance": seed, "at": args.at,
                "best": best, "overrides": VARIANTS[name],
                "auroc_single": auroc(rank_by[is_single], improving[is_single]),
                "auroc_double": auroc(rank_by[~is_single], improving[~is_single]),
                "auroc_single_acq": auroc(acq[is_single], improving[is_single]),
                "auroc_double_acq": auroc(acq[~is_single], improving[~is_single]),
                "improving_single": int(improving[is_single].sum()),
                "improving_double": int(improving[~is_single].sum()),
                "feasible_single": round(float(feasible[is_single].float().mean()), 4),
                "top_k_feasible": round(float(feasible[top].float().mean()), 4),
                "top_k_improving": int(improving[top].sum()),
                "fit_seconds": round(fit_seconds, 2), "score_seconds": round(score_seconds, 2),
                "load_average": [round(v, 2) for v in os.getloadavg()], "machine": info,
            }
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
