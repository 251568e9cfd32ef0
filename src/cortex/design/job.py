"""A whole design run from one config: problem, tree, LaMBO-2 rounds, the GA baseline, outputs.

This is what ``cortex design --config ...`` and ``cortex quickstart`` run. The config has sections
``problem`` (an Ehrlich function and the size of the initial feasible set), ``tree`` (the surrogate's
architecture, or a registry tree to fine-tune), ``lambo`` (:class:`~cortex.design.lambo2.LaMBO2Config`),
``surrogate`` (:class:`~cortex.design.surrogate.SurrogateSettings`), ``loop`` (batch size, budget,
rounds, chains) and top-level ``seed``, ``out_dir``, ``compare_ga``, ``register_as`` and ``threads``
(torch threads while the job runs; small trees are fastest on one).

Outputs in ``out_dir``: ``history.parquet`` (every evaluation of both methods; the ``method`` column
says which, and a killed LaMBO-2 run resumes from its rows), ``best_vs_evaluations.png`` and the
trained tree registered under ``register_as``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cortex._fit import torch_threads
from cortex._validate import (
    Problems,
    build_dataclass,
    check_bool,
    check_choice,
    check_known_keys,
    check_non_empty,
    check_number,
    check_positive,
    check_type,
)
from cortex.design.acquisition import DesignObjective
from cortex.design.blackbox import BlackBox
from cortex.design.lambo2 import LaMBO2Config
from cortex.design.loop import (
    DesignLoop,
    DesignLoopConfig,
    DesignResult,
    RoundReport,
    write_parquet_atomic,
)
from cortex.design.surrogate import SurrogateSettings, design_tree_config
from cortex.errors import ConfigError, DesignError

# The one GA setting of `cortex design`, quickstart and benchmarks/lambo_ehrlich.py. Tuned once for the GA's
# own sake on Ehrlich instances 200-204 (never reported), both variants, 4,096 evaluations
# (`python benchmarks/lambo_ehrlich.py --ga-grid`, 5 instances): population 16 / mutation rate 1.0 had the best mean best
# over the 1,024 / 2,048 / 4,096 checkpoints of both variants (0.312; population 32 / rate 1.5, used by
# `cortex design` before: 0.293; population 16 / rate 1.5, used by the benchmark before: 0.287).
GA_SETTINGS = {"population_size": 16, "survival_quantile": 0.25, "mutation_rate": 1.0, "crossover_prob": 0.2}
INITIAL_SEED_OFFSET = 10_000  # initial designs are drawn with seed + this, as in benchmarks/lambo_ehrlich.py


@dataclass(frozen=True)
class ProblemConfig:
    """The Ehrlich function to design for (Stanton et al. 2024) and the initial feasible set.

    ``variant`` ``"V,L,c,k,q"`` sets ``num_states, dim, num_motifs, motif_length, quantization``.
    """

    kind: str = "ehrlich"
    variant: str = "32,32,4,4,4"
    epistasis_factor: float = 0.0
    noise_std: float = 0.0
    random_seed: int = 0
    initial_designs: int = 128

    def __post_init__(self) -> None:
        problems = Problems()
        check_choice("problem.kind", self.kind, ["ehrlich"], problems)
        check_type("problem.variant", self.variant, (str,), problems)
        check_number("problem.epistasis_factor", self.epistasis_factor, problems, low=0)
        check_number("problem.noise_std", self.noise_std, problems, low=0)
        check_type("problem.random_seed", self.random_seed, (int,), problems)
        check_positive("problem.initial_designs", self.initial_designs, problems)
        problems.raise_if_any("design config section 'problem'")

    def build(self):
        """The :class:`~cortex.design.test_functions.Ehrlich` function."""
        from cortex.design.test_functions import Ehrlich

        return Ehrlich.from_variant(self.variant, epistasis_factor=self.epistasis_factor, noise_std=self.noise_std,
                                    random_seed=self.random_seed)


@dataclass(frozen=True)
class TreeSettings:
    """The surrogate tree: built from these sizes, or ``source``, a registry tree to fine-tune."""

    source: str | None = None
    ensemble_size: int = 4
    width: int = 32
    root_kind: str = "conv1d"
    kernel_size: int = 5
    num_blocks: int = 2
    pooling: str = "mean"
    feasibility_leaf: bool = True

    def __post_init__(self) -> None:
        problems = Problems()
        for name in ("ensemble_size", "width", "kernel_size", "num_blocks"):
            check_positive(f"tree.{name}", getattr(self, name), problems)
        if self.source is not None:
            check_non_empty("tree.source", self.source, problems)
        check_bool("tree.feasibility_leaf", self.feasibility_leaf, problems)
        problems.raise_if_any("design config section 'tree'")


# The `loop` section is DesignLoopConfig's round structure: its fields except the nested `lambo` and
# `surrogate`, which are sections of their own here. It is derived from DesignLoopConfig so that a new
# loop setting is declared (and documented, and validated) once; only the job defaults that differ are named.
JOB_LOOP_DEFAULTS = {"batch_size": 64, "budget": 1024, "num_chains": 128}
LoopSettings = dataclasses.make_dataclass(
    "LoopSettings",
    [(f.name, f.type, field(default=JOB_LOOP_DEFAULTS.get(f.name, f.default)))
     for f in dataclasses.fields(DesignLoopConfig) if f.name not in ("lambo", "surrogate")],
    frozen=True,
    namespace={"__doc__": "Round structure of a design job: see :class:`~cortex.design.loop.DesignLoopConfig`.",
               "__module__": __name__},
)


@dataclass(frozen=True)
class DesignJobConfig:
    """Everything a design run needs (see the module docstring); build from a dict with :meth:`from_dict`."""

    problem: ProblemConfig = field(default_factory=ProblemConfig)
    tree: TreeSettings = field(default_factory=TreeSettings)
    lambo: LaMBO2Config = field(default_factory=LaMBO2Config)
    surrogate: SurrogateSettings = field(default_factory=SurrogateSettings)
    loop: LoopSettings = field(default_factory=LoopSettings)
    seed: int = 0
    out_dir: str = "cortex-design"
    compare_ga: bool = True
    register_as: str | None = "ehrlich-tree"
    threads: int = 1

    def __post_init__(self) -> None:
        problems = Problems()
        self._check(problems)
        problems.raise_if_any("design config")

    def _check(self, problems: Problems) -> None:
        check_positive("threads", self.threads, problems)  # 1 is fastest for small trees
        check_type("seed", self.seed, (int,), problems)
        check_non_empty("out_dir", self.out_dir, problems)
        check_bool("compare_ga", self.compare_ga, problems)
        if self.register_as is not None:
            check_non_empty("register_as", self.register_as, problems)
        try:
            self.loop_config()  # the loop section validates through DesignLoopConfig, before anything heavy
        except DesignError as err:
            problems.add(f"design config section 'loop': {err}", "loop")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DesignJobConfig":
        """Parse nested dicts (e.g. a Hydra/YAML config). Every problem of every section (unknown keys
        with the closest known one, values out of range) is reported in one :class:`ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"A design config must be a mapping of sections; got {type(data).__name__}.")
        problems = Problems()
        check_known_keys("design config", data, {f.name for f in dataclasses.fields(cls)}, problems)
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k not in _SECTION_TYPES and k in cls._fields()}
        for key, target in _SECTION_TYPES.items():
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                problems.add(f"design config section {key!r} must be a mapping; got {value!r}.", key, value)
                continue
            try:
                kwargs[key] = build_dataclass(target, value, key, problems)
            except ConfigError as err:
                problems.extend(err.problems)
            except DesignError as err:  # LaMBO2Config / SurrogateSettings validate with DesignError
                problems.add(f"design config section {key!r}: {err}", key)
        try:  # sections that failed above are left at their defaults, so the rest is still checked
            job = cls(**kwargs)
        except ConfigError as err:
            problems.extend(err.problems)
        problems.raise_if_any("design config")
        return job

    @classmethod
    def _fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def loop_config(self) -> DesignLoopConfig:
        loop = self.loop
        return DesignLoopConfig(**dataclasses.asdict(loop), lambo=self.lambo, surrogate=self.surrogate)


_SECTION_TYPES = {"problem": ProblemConfig, "tree": TreeSettings, "lambo": LaMBO2Config,
                  "surrogate": SurrogateSettings, "loop": LoopSettings}


@dataclass
class DesignJobResult:
    """What a design job produced.

    Attributes:
        lambo: the LaMBO-2 :class:`~cortex.design.loop.DesignResult`.
        lambo_curve: ``[N]`` best value after each LaMBO-2 evaluation.
        ga_curve: ``[N']`` the GA's (empty when ``compare_ga`` is off).
        history_path, plot_path: output files.
        tree_name: registry name of the trained tree (``None`` if not registered).
        seconds: wall time of LaMBO-2 and of the GA.
    """

    lambo: DesignResult
    lambo_curve: np.ndarray
    ga_curve: np.ndarray
    history_path: Path
    plot_path: Path | None
    tree_name: str | None
    lambo_seconds: float
    ga_seconds: float

    @property
    def ga_best(self) -> float:
        return float(self.ga_curve[-1]) if len(self.ga_curve) else -math.inf


def build_tree(settings: TreeSettings, alphabet: str, length: int):
    """A new surrogate tree, or a copy of the registry tree ``settings.source``."""
    from cortex.models.neural_tree import NeuralTreeModel

    if settings.source is None:
        return NeuralTreeModel(design_tree_config(
            alphabet, length, ensemble_size=settings.ensemble_size, width=settings.width,
            root_kind=settings.root_kind, kernel_size=settings.kernel_size, num_blocks=settings.num_blocks,
            pooling=settings.pooling, feasibility_leaf="feasible" if settings.feasibility_leaf else None,
        ))
    from transformers import AutoModel

    from cortex.hub.registry import Registry

    reg = Registry()
    entry = reg.get(settings.source)
    if entry.kind != "tree":
        raise ConfigError(f"tree.source={settings.source!r} is a {entry.kind} entry; name a registered tree (kind tree).")
    return AutoModel.from_pretrained(reg.path(entry.name), use_safetensors=True)


def design_objective(tree) -> DesignObjective:
    """``value`` is the objective; ``feasible`` (when the tree has it) the constraint."""
    leaves = tree.config.leaf_specs()
    return DesignObjective(objectives=("value",), constraints=("feasible",) if "feasible" in leaves else ())


def ehrlich_design_loop(problem, config: DesignJobConfig, *, budget: int | None = None,
                        history_path: str | os.PathLike | None = None) -> DesignLoop:
    """A :class:`DesignLoop` on an Ehrlich ``problem`` with ``config``'s tree, LaMBO-2 and loop settings.

    ``budget`` overrides ``config.loop.budget`` (the benchmark script passes its own).
    """
    tree = build_tree(config.tree, problem.alphabet, problem.dim)
    loop_config = config.loop_config()
    if budget is not None:
        loop_config = dataclasses.replace(loop_config, budget=budget)
    return DesignLoop(tree, design_objective(tree), problem, alphabet=problem.alphabet, length=problem.dim,
                      config=loop_config, history_path=history_path, seed=config.seed)


def run_ga(problem, initial: torch.Tensor, budget: int, seed: int) -> BlackBox:
    """The benchmark's genetic algorithm from ``initial`` at ``budget`` evaluations."""
    from cortex.design.baselines import GeneticAlgorithm, GeneticConfig

    black_box = BlackBox(problem, length=problem.dim, num_states=problem.num_states, budget=budget,
                         alphabet=problem.alphabet)
    GeneticAlgorithm(GeneticConfig(**GA_SETTINGS)).run(black_box, initial, seed=seed, method="ga")
    return black_box


def run_design_job(
    config: DesignJobConfig,
    *,
    on_round: Callable[[RoundReport, DesignLoop], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_ga: Callable[[np.ndarray], None] | None = None,
) -> DesignJobResult:
    """Run the GA and LaMBO-2 at the same budget on the configured problem, and write the outputs.

    ``on_round`` sees each LaMBO-2 round; ``on_stage`` gets a short line when a stage starts;
    ``on_ga`` gets the GA's best-so-far curve ``[budget]`` before LaMBO-2 starts.
    Running again with the same ``out_dir`` resumes the LaMBO-2 history found there.
    """
    with torch_threads(config.threads):
        return _run(config, on_round, on_stage or (lambda _msg: None), on_ga)


def _run(config: DesignJobConfig, on_round, stage, on_ga) -> DesignJobResult:
    torch.manual_seed(config.seed)
    problem = config.problem.build()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    history_path = out / "history.parquet"
    initial = problem.random_feasible(config.problem.initial_designs, seed=INITIAL_SEED_OFFSET + config.seed)
    loop = ehrlich_design_loop(problem, config, history_path=history_path)
    tree = loop.tree

    # the GA first (it takes a second): its curve is then shown beside every LaMBO-2 round
    ga = None
    ga_seconds = 0.0
    if config.compare_ga:
        budget = loop.black_box.budget
        if budget is None:  # rounds-bounded run: the most LaMBO-2 can spend
            budget = config.problem.initial_designs + (config.loop.rounds or 0) * config.loop.batch_size
        stage(f"genetic algorithm ({budget} evaluations)")
        start = time.perf_counter()
        ga = run_ga(problem, initial, budget, config.seed)
        ga_seconds = time.perf_counter() - start
        if on_ga is not None:
            on_ga(ga.best_so_far())

    stage(f"LaMBO-2 on Ehrlich {problem.config.variant} (random_seed={problem.random_seed})")
    start = time.perf_counter()
    lambo = loop.run(initial, on_round=on_round)
    lambo_seconds = time.perf_counter() - start

    frame = loop.history_frame()
    ga_curve = np.zeros(0)
    if ga is not None:
        import pandas as pd

        # side by side at the same budget: the GA's first evaluations, as many as LaMBO-2 spent
        ga_frame = ga.to_dataframe().iloc[: loop.black_box.evaluations]
        ga_curve = ga.best_so_far()[: loop.black_box.evaluations]
        frame = pd.concat([frame, ga_frame], ignore_index=True)
    write_parquet_atomic(frame, history_path)
    lambo_curve = loop.black_box.best_so_far()
    plot_path = write_plot(out / "best_vs_evaluations.png", {"LaMBO-2": lambo_curve, "GA": ga_curve},
                           title=f"Ehrlich {problem.config.variant}")

    tree_name = None
    if config.register_as:
        from cortex.models.neural_tree import register_tree

        loop.fit()  # one last fine-tune so the registered tree has seen every evaluation
        stage(f"registering the trained tree as {config.register_as!r}")
        entry = register_tree(tree, config.register_as, tags=["design", "lambo2", "ehrlich"], extra={
            "problem": dataclasses.asdict(config.problem), "best_value": lambo.best_value,
            "evaluations": lambo.evaluations,
        })
        tree_name = entry.name
    return DesignJobResult(lambo=lambo, lambo_curve=lambo_curve, ga_curve=ga_curve, history_path=history_path,
                           plot_path=plot_path, tree_name=tree_name, lambo_seconds=lambo_seconds,
                           ga_seconds=ga_seconds)


def write_plot(path: Path, curves: Mapping[str, np.ndarray], title: str = "") -> Path | None:
    """Best value vs evaluations for each named curve, saved atomically as a PNG (``None`` if nothing to plot)."""
    curves = {k: np.asarray(v, dtype=float) for k, v in curves.items() if len(v)}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, curve in curves.items():
        shown = np.where(np.isfinite(curve), curve, np.nan)
        ax.plot(np.arange(1, len(curve) + 1), shown, label=name)
    ax.set_xlabel("black-box evaluations")
    ax.set_ylabel("best value so far")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.png")
    try:
        fig.savefig(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
