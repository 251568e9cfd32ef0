"""``cortex quickstart``: the project's main job on an embedded default, offline, in a few minutes.

It makes an Ehrlich problem, trains a small tree (value regression, feasibility classifier and a
denoising LM) on an initial feasible set, runs LaMBO-2 rounds, runs the genetic algorithm at the
same budget from the same initial set, writes ``history.parquet`` and ``best_vs_evaluations.png``,
and registers the trained tree. The defaults below are sized to finish in under five minutes on
two CPU cores; ``configs/design/ehrlich.yaml`` holds the same settings for ``cortex design``.
"""

from __future__ import annotations

from cortex.design.job import DesignJobConfig, LoopSettings, ProblemConfig, TreeSettings
from cortex.design.lambo2 import LaMBO2Config
from cortex.design.surrogate import SurrogateSettings
from cortex.errors import ConfigError

QUICKSTART_VARIANT = "32,32,4,4,4"
QUICKSTART_EVALUATIONS = 1024


PRESETS = ("default", "published", "offspring")


def quickstart_config(evaluations: int | None = None, seed: int = 0, out_dir: str = "cortex-quickstart",
                      preset: str = "default") -> DesignJobConfig:
    """The embedded default design job; ``evaluations`` overrides the budget, ``seed`` the instance and runs.

    ``preset``: ``default`` (repair moves, a trust region, a surrogate retrained to convergence),
    ``published`` (LaMBO-2 as published: diffusion chains from the best designs, independent decoding,
    a fixed number of fine-tuning steps per round; the settings shipped before) or ``offspring``
    (surrogate-ranked offspring: each round breeds genetic-algorithm children of the elite, drops those
    the learned transition support forbids, and evaluates the ones the tree's acquisition ranks first;
    see ``OFFSPRING_LOOP``).
    """
    if preset not in PRESETS:
        raise ConfigError.bad_choice("preset", preset, list(PRESETS))
    budget = QUICKSTART_EVALUATIONS if evaluations is None else evaluations
    problem = ProblemConfig(variant=QUICKSTART_VARIANT, random_seed=seed, initial_designs=128)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= problem.initial_designs:
        raise ConfigError(
            f"--evaluations {budget} must exceed the {problem.initial_designs} initial designs it includes; "
            f"pass e.g. --evaluations {QUICKSTART_EVALUATIONS}."
        )
    common = {"problem": problem, "seed": seed, "out_dir": out_dir, "compare_ga": True,
              "register_as": "quickstart-ehrlich-tree"}
    if preset == "published":
        return DesignJobConfig(
            tree=TreeSettings(ensemble_size=4, width=32),
            # measured on Ehrlich (32, 32, 4, 4, 4), 4,096 evaluations (benchmarks/lambo_ehrlich.py), mean best:
            # occlusion saliency, tau 0.5, lambda 0.5, LM on every design: 0.14 on seeds 0-2; gradient saliency
            # alone: 0.19; gradient + tau 2 + lambda 0.2 + LM on the seed designs only: 0.35.
            lambo=LaMBO2Config(num_steps=4, num_mutations=2, guidance_steps=4, saliency="gradient",
                               saliency_temperature=2.0, kl_weight=0.2),
            surrogate=SurrogateSettings(initial_steps=400, finetune_steps=40, target_transform="log",
                                        lm_data="seeds"),
            loop=LoopSettings(batch_size=64, budget=budget, num_chains=128, num_parents=16),
            **common,
        )
    loop = {**DEFAULT_LOOP, **(OFFSPRING_LOOP if preset == "offspring" else {})}
    return DesignJobConfig(
        tree=TreeSettings(ensemble_size=DEFAULT_TREE["ensemble_size"], width=DEFAULT_TREE["width"],
                          kernel_size=DEFAULT_TREE["kernel_size"]),
        lambo=LaMBO2Config(**DEFAULT_LAMBO),
        surrogate=SurrogateSettings(**DEFAULT_SURROGATE),
        loop=LoopSettings(budget=budget, **loop),
        **common,
    )


# The default preset (see benchmarks/lambo_ehrlich.py --preset, and the ablation table in the README)
DEFAULT_TREE = {"ensemble_size": 4, "width": 32, "kernel_size": 7}
DEFAULT_LAMBO = {"num_steps": 2, "num_mutations": 1, "edit_window": 2, "decoder": "joint", "guidance_steps": 4,
                 "saliency": "gradient", "saliency_temperature": 2.0, "kl_weight": 0.2}
DEFAULT_SURROGATE = {"initial_steps": 300, "finetune_steps": 40, "target_transform": "log", "lm_data": "all",
                     "finetune_epochs": 2.0, "max_finetune_steps": 16, "patience": 1}
DEFAULT_LOOP = {"batch_size": 32, "num_chains": 16, "num_parents": 8, "parent_selection": "diverse",
                "trust_region_fraction": 1.0, "trust_region_parents": 2, "trust_region_candidates": 512,
                "crossover_fraction": 0.0}

# Surrogate-ranked offspring (``--preset offspring``, benchmarks/lambo_ehrlich.py ``--methods lambo2-offspring``):
# small rounds of GA children of the elite, support-filtered, ranked by the acquisition plus the support prior;
# the tree is fine-tuned every few rounds so the many short rounds do not multiply the training cost. On GA
# children the tree ranks "not worse than the parent" well (AUROC ~0.75-0.8) but "better" at chance, so the
# ranking mostly keeps evaluations off children that break a motif (see the README's Guided design section).
OFFSPRING_LOOP = {"batch_size": 12, "trust_region_fraction": 0.0, "evolution_fraction": 1.0,
                  "evolution_rank": "acquisition", "evolution_candidates": 4, "evolution_mutation_rate": 2.0,
                  "fit_every": 4}
