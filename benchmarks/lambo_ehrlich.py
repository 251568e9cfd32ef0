"""Sequence-design methods on Ehrlich functions at a fixed black-box budget.

    python benchmarks/lambo_ehrlich.py --variant 32,32,4,4,4 --seeds 5 --budget 4096 --methods lambo2,ga
    python benchmarks/lambo_ehrlich.py --first-seed 100 --seeds 5 --methods lambo2,lambo2-published,ga

Methods: ``lambo2`` (the default preset of ``cortex quickstart``), ``lambo2-published`` (LaMBO-2 as
published, the settings shipped before), ``lambo2-offspring`` (the ``offspring`` preset: GA children of the
elite ranked by the surrogate's acquisition, the best ``batch_size`` evaluated each round), ``ga``, ``ga-support`` (the GA's breeding in the design loop with
the learned transition support filtering children; no surrogate), ``random``. Instances 0-4 were used to tune the
default preset; 100-104 are held out (never tuned on); the GA setting was tuned on 200-204.

Prints one JSON line per (method, seed): ``method, variant, seed, evaluations, best, evals_to_solve``
(null when 1.0 was never reached), ``evals_to`` (evaluations to reach 0.5 / 0.75 / 1.0, null if never),
``seconds``, ``best_at`` (best value after 128/256/512/... evaluations, every power of two up to the budget),
``feasible_fraction``, ``infeasible_share`` and ``duplicate_share`` of the proposals after the initial
designs, ``ratio_vs_ga`` (this method's best / the GA's best on the same seed), and the machine.
``best`` is null when no feasible sequence was found (its value is -inf). Budgets up to 16,384 work
(``--budget 16384``).

Seed ``s`` builds the Ehrlich instance with ``random_seed = s`` (unless ``--problem-seed`` fixes one
instance) and seeds the method with ``s``. Every method starts from the same initial set: ``--initial``
feasible chain samples drawn with the seed, evaluated inside the budget.

A method is one function ``runner(problem, budget, seed) -> BlackBox`` registered in ``METHODS``;
LaMBO-2 plugs in as ``METHODS["lambo2"] = run_lambo2``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cortex.design import BlackBox, Ehrlich, GeneticAlgorithm, GeneticConfig, random_search
from cortex.design.job import GA_SETTINGS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

Runner = Callable[[Ehrlich, int, int], BlackBox]
METHODS: dict[str, Runner] = {}
CHECKPOINTS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
THRESHOLDS = (0.5, 0.75, 1.0)
INITIAL_DESIGNS = 128


def register(name: str) -> Callable[[Runner], Runner]:
    """Decorator adding ``runner(problem, budget, seed) -> BlackBox`` to :data:`METHODS` under ``name``."""

    def add(runner: Runner) -> Runner:
        METHODS[name] = runner
        return runner

    return add


def make_black_box(problem: Ehrlich, budget: int) -> BlackBox:
    """The budgeted black box every method evaluates through."""
    return BlackBox(problem, length=problem.dim, num_states=problem.num_states, budget=budget,
                    alphabet=problem.alphabet)


def initial_designs(problem: Ehrlich, seed: int, n: int = INITIAL_DESIGNS) -> torch.LongTensor:
    """The shared starting set: ``n`` feasible chain samples ``[n, L]`` drawn with ``seed``."""
    return problem.random_feasible(n, seed=10_000 + seed)


@register("ga")
def run_ga(problem: Ehrlich, budget: int, seed: int) -> BlackBox:
    """The holo-style GA with the one setting ``cortex design`` uses too (``cortex.design.job.GA_SETTINGS``)."""
    black_box = make_black_box(problem, budget)
    GeneticAlgorithm(GeneticConfig(**GA_SETTINGS)).run(black_box, initial_designs(problem, seed), seed=seed,
                                                         method="ga")
    return black_box


@register("random")
def run_random(problem: Ehrlich, budget: int, seed: int) -> BlackBox:
    """Random feasible chain samples (knows the feasibility model: a reference, not a competitor)."""
    black_box = make_black_box(problem, budget)
    black_box.evaluate(initial_designs(problem, seed), round=0, method="random")
    random_search(black_box, lambda n, g: problem.random_feasible(n, seed=g), seed=seed, method="random")
    return black_box


LAMBO_OVERRIDES: dict[str, dict[str, object]] = {}  # section -> field -> value, from --set


def parse_override(text: str) -> tuple[str, str, object]:
    """``section.field=value`` (e.g. ``lambo.saliency=gradient``) -> (section, field, YAML-parsed value)."""
    import yaml

    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise argparse.ArgumentTypeError(f"--set {text!r}: write section.field=value, e.g. lambo.saliency=gradient")
    return section, name, yaml.safe_load(raw)


def lambo2_config(preset: str, seed: int):
    """The ``preset`` job config of ``cortex quickstart`` with the ``--set`` overrides applied."""
    import dataclasses

    from cortex.design.quickstart import quickstart_config

    config = quickstart_config(seed=seed, preset=preset)
    for section, fields in LAMBO_OVERRIDES.items():
        config = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **fields)})
    return config


def _run_preset(preset: str, problem: Ehrlich, budget: int, seed: int) -> BlackBox:
    from cortex.design.job import ehrlich_design_loop

    torch.manual_seed(seed)
    loop = ehrlich_design_loop(problem, lambo2_config(preset, seed), budget=budget)
    loop.run(initial_designs(problem, seed))
    return loop.black_box


@register("lambo2")
def run_lambo2(problem: Ehrlich, budget: int, seed: int) -> BlackBox:
    """LaMBO-2 with the default preset of ``cortex quickstart`` (plus any ``--set`` overrides)."""
    return _run_preset("default", problem, budget, seed)


@register("lambo2-published")
def run_lambo2_published(problem: Ehrlich, budget: int, seed: int) -> BlackBox:
    """LaMBO-2 as published (the ``published`` preset, plus any ``--set`` overrides)."""
    return _run_preset("published", problem, budget, seed)


@register("lambo2-offspring")
def run_lambo2_offspring(problem: Ehrlich, budget: int, seed: int) -> BlackBox:
    """Surrogate-ranked offspring (the ``offspring`` preset, plus any ``--set`` overrides): GA children of the
    elite, support-filtered, the acquisition's best ``batch_size`` evaluated each round."""
    return _run_preset("offspring", problem, budget, seed)


# The GA's breeding (children of the elite, population-sized rounds) inside the design loop, with the learned
# transition support dropping children that hold a pair it forbids and no surrogate ranking (random order;
# the tree is trained once and never read). A reference for what the support filter alone is worth.
GA_SUPPORT_LOOP = {"batch_size": 12, "trust_region_fraction": 0.0, "evolution_fraction": 1.0,
                   "evolution_rank": "random", "fit_every": 1_000_000, "method": "ga-support"}


@register("ga-support")
def run_ga_support(problem: Ehrlich, budget: int, seed: int) -> BlackBox:
    """GA breeding with the learned transition support as a filter (see ``GA_SUPPORT_LOOP``)."""
    import dataclasses

    from cortex.design.job import ehrlich_design_loop
    from cortex.design.quickstart import quickstart_config

    torch.manual_seed(seed)
    config = quickstart_config(seed=seed, preset="default")
    config = dataclasses.replace(config, loop=dataclasses.replace(config.loop, **GA_SUPPORT_LOOP))
    loop = ehrlich_design_loop(problem, config, budget=budget)
    loop.run(initial_designs(problem, seed))
    return loop.black_box


def summarize(black_box: BlackBox, budget: int) -> dict:
    """Best value overall and at each checkpoint, evaluations to reach 1.0 and the feasible fraction."""
    running = black_box.best_so_far()
    best = float(running[-1]) if len(running) else -math.inf
    solved = [i for i, v in enumerate(running) if v >= 1.0]
    evals_to = {}
    for threshold in THRESHOLDS:
        reached = [i for i, v in enumerate(running) if v >= threshold - 1e-9]
        evals_to[str(threshold)] = reached[0] + 1 if reached else None
    proposals = [r for r in black_box.history if r.round > 0]
    asked_after_seeds = max(black_box.asked - INITIAL_DESIGNS, 0)
    best_at = {
        str(c): (float(running[min(c, len(running)) - 1]) if len(running) else None)
        for c in sorted({*(c for c in CHECKPOINTS if c <= budget), budget})
    }
    best_at = {k: (v if v is not None and math.isfinite(v) else None) for k, v in best_at.items()}
    feasible = sum(r.feasible for r in black_box.history)
    return {
        "evaluations": black_box.evaluations,
        "best": best if math.isfinite(best) else None,
        "evals_to_solve": solved[0] + 1 if solved else None,
        "evals_to": evals_to,
        "best_at": best_at,
        "feasible_fraction": round(feasible / max(black_box.evaluations, 1), 4),
        "infeasible_share": round(sum(not r.feasible for r in proposals) / max(len(proposals), 1), 4),
        "duplicate_share": round(black_box.repeated / max(asked_after_seeds, 1), 4),
        "failed": sum(r.failed for r in black_box.history),
    }


GA_GRID = [(16, 1.0), (16, 1.5), (32, 1.0), (32, 1.5), (64, 1.0), (64, 1.5)]  # (population_size, mutation_rate)


def ga_grid(variants: list[str], first_seed: int, seeds: int, budget: int) -> None:
    """The GA tuning grid behind ``GA_SETTINGS``: mean best at 1,024 / 2,048 / budget per setting and variant."""
    base = {k: v for k, v in GA_SETTINGS.items() if k not in ("population_size", "mutation_rate")}
    for variant in variants:
        for population, rate in GA_GRID:
            bests = []
            for seed in range(first_seed, first_seed + seeds):
                problem = Ehrlich.from_variant(variant, random_seed=seed)
                black_box = make_black_box(problem, budget)
                config = GeneticConfig(population_size=population, mutation_rate=rate, **base)
                GeneticAlgorithm(config).run(black_box, initial_designs(problem, seed), seed=seed, method="ga")
                curve = black_box.best_so_far()
                bests.append([float(curve[min(c, len(curve)) - 1]) for c in (1024, 2048, budget)])
            means = torch.tensor(bests).mean(0).tolist()
            print(json.dumps({"variant": variant, "population_size": population, "mutation_rate": rate,
                              "instances": [first_seed, first_seed + seeds - 1],
                              "mean_best_at_1024_2048_budget": [round(v, 4) for v in means]}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="32,32,4,4,4",
                        help="Ehrlich 'num_states,dim,num_motifs,motif_length,quantization'")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds (S..S+N-1, S = --first-seed); default 3, 5 with --ga-grid")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed S (e.g. 100 for held-out instances)")
    parser.add_argument("--budget", type=int, default=4096, help="black-box evaluations per run (up to 16384)")
    parser.add_argument("--methods", default="ga,random", help=f"comma-separated, from: {', '.join(METHODS)}")
    parser.add_argument("--problem-seed", type=int, default=None, help="fix the Ehrlich instance across seeds")
    parser.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                        metavar="SECTION.FIELD=VALUE",
                        help="override a LaMBO-2 job setting (sections: tree, lambo, surrogate, loop), repeatable")
    parser.add_argument("--ga-grid", action="store_true",
                        help="print the GA tuning grid instead (instances 200-204 unless --first-seed is given)")
    args = parser.parse_args(argv)
    if args.ga_grid:
        torch.set_num_threads(1)
        first = 200 if args.first_seed == 0 else args.first_seed
        ga_grid(["32,32,4,4,4", "32,128,4,4,4"], first, args.seeds or 5, args.budget)
        return 0
    args.seeds = args.seeds or 3
    for section, name, value in args.overrides:
        if section not in ("tree", "lambo", "surrogate", "loop"):
            parser.error(f"--set {section}.{name}: section must be one of tree, lambo, surrogate, loop")
        LAMBO_OVERRIDES.setdefault(section, {})[name] = value
    if LAMBO_OVERRIDES:
        import dataclasses

        from cortex.design.quickstart import quickstart_config

        base = quickstart_config(preset="published")
        for section, fields in LAMBO_OVERRIDES.items():
            known = {f.name for f in dataclasses.fields(getattr(base, section))}
            for name in fields:
                if name not in known:
                    parser.error(f"--set {section}.{name}: unknown field; {section} has {sorted(known)}")

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    torch.set_num_threads(1)  # fair on a shared 2-core machine; every method runs on one thread
    info = {**machine(), "python": sys.version.split()[0]}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        instance = seed if args.problem_seed is None else args.problem_seed
        problem = Ehrlich.from_variant(args.variant, random_seed=instance)
        ga_best = None
        rows = []
        for method in methods:
            start, cpu_start = time.perf_counter(), time.process_time()
            black_box = METHODS[method](problem, args.budget, seed)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            # cpu_seconds: this process's CPU time; on a shared machine wall seconds also count waiting
            row = {"method": method, "variant": problem.config.variant, "seed": seed,
                   **summarize(black_box, args.budget), "seconds": round(seconds, 3),
                   "cpu_seconds": round(cpu, 3), "load_average": [round(v, 2) for v in os.getloadavg()]}
            if method.startswith("lambo2") and LAMBO_OVERRIDES:
                row["settings"] = LAMBO_OVERRIDES
            if method == "ga":
                ga_best = row["best"]
            rows.append(row)
        for row in rows:
            ratio = row["best"] / ga_best if ga_best and row["best"] is not None else None
            row["ratio_vs_ga"] = round(ratio, 4) if ratio is not None else None
            row["machine"] = info
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
