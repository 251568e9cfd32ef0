"""Design commands: ``cortex design --config ...`` and ``cortex quickstart`` (the main job)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from cortex.cli._common import console


def _fmt(value: float, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _run_with_display(config, title: str) -> None:
    """Run a design job with a live progress bar and a growing per-round table, then a summary."""
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from cortex.design.job import run_design_job

    table = Table(title=title, box=None, header_style="bold")
    for column in ("round", "evaluations", "sent", "best", "GA best", "median", "feasible", "failed", "seconds"):
        table.add_column(column, justify="right")
    ga_curve: list = []
    budget = config.loop.budget
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console)
    task = progress.add_task("LaMBO-2 evaluations", total=budget)

    def on_round(report, loop) -> None:
        # the GA's best after the same number of evaluations, for a side-by-side reading
        ga = float(ga_curve[0][min(report.evaluations, len(ga_curve[0])) - 1]) if ga_curve and len(ga_curve[0]) else None
        table.add_row(str(report.round), str(report.evaluations), str(report.sent), _fmt(report.best), _fmt(ga),
                      _fmt(report.median), f"{report.feasible_fraction:.2f}", str(report.failed), f"{report.seconds:.1f}")
        progress.update(task, completed=report.evaluations)

    def on_stage(message: str) -> None:
        progress.update(task, description=message[:60])

    with Live(Group(table, progress), console=console, refresh_per_second=4, transient=False):
        result = run_design_job(config, on_round=on_round, on_stage=on_stage, on_ga=ga_curve.append)
        progress.update(task, description="done", completed=result.lambo.evaluations)
    console.print()

    summary = Table(box=None, header_style="bold", title="LaMBO-2 vs GA at the same budget")
    for column in ("method", "evaluations", "best", "evals to 1.0", "seconds"):
        summary.add_column(column, justify="right")
    for name, curve, seconds in (("LaMBO-2", result.lambo_curve, result.lambo_seconds),
                                 ("GA", result.ga_curve, result.ga_seconds)):
        if not len(curve):
            continue
        solved = [i + 1 for i, v in enumerate(curve) if v >= 1.0]
        summary.add_row(name, str(len(curve)), _fmt(float(curve[-1])), str(solved[0]) if solved else "—",
                        f"{seconds:.1f}")
    console.print(summary)
    if len(result.ga_curve):
        lam, ga = float(result.lambo_curve[-1]), float(result.ga_curve[-1])
        verdict = "LaMBO-2 leads" if lam > ga else ("the GA leads" if ga > lam else "tied")
        # said in words so a reader never has to guess who won at this budget
        console.print(f"At {len(result.lambo_curve)} evaluations {verdict} ({_fmt(lam)} vs {_fmt(ga)}).")
    console.print(f"history: {result.history_path}")
    if result.plot_path is not None:
        console.print(f"plot:    {result.plot_path}")
    if result.tree_name is not None:
        console.print(f"tree:    registered as {result.tree_name} (cortex models show {result.tree_name})")


def design_cmd(
    config: str = typer.Option(
        ..., "--config", "-c", help="Shipped design config name (ehrlich; see cortex configs list design) or a YAML path."
    ),
    overrides: list[str] = typer.Argument(None, help="Hydra overrides, e.g. loop.budget=2048 lambo.num_mutations=3."),
    out: Path = typer.Option(None, "--out", help="Output folder (overrides out_dir in the config)."),
) -> None:
    """Run LaMBO-2 guided design (and the GA baseline) as configured; resumes a killed run in the same folder."""
    from cortex.design.job import DesignJobConfig

    data = load_design_config(config, overrides or [])
    if out is not None:
        data["out_dir"] = str(out)
    job = DesignJobConfig.from_dict(data)
    _run_with_display(job, f"LaMBO-2 design ({Path(config).stem})")


def quickstart_cmd(
    evaluations: int = typer.Option(
        None, "--evaluations", "-n", min=16, help="Black-box budget, initial designs included (default 1024)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds the problem instance, the initial designs and the optimizers."),
    out: Path = typer.Option(Path("cortex-quickstart"), "--out", help="Output folder (history, plot); reruns resume here."),
    preset: str = typer.Option("default", "--preset",
                               help="default (repair moves + trust region), published (LaMBO-2 as published) or offspring\n"
                                    "(GA children of the elite ranked by the tree; see the README)."),
) -> None:
    """The main job: LaMBO-2 on an Ehrlich function vs a genetic algorithm, offline, in a few minutes."""
    from cortex.design.quickstart import quickstart_config

    job = quickstart_config(evaluations=evaluations, seed=seed, out_dir=str(out), preset=preset)
    console.print(
        f"[bold]cortex quickstart[/]: Ehrlich {job.problem.variant} (random_seed={job.problem.random_seed}), "
        f"{job.loop.budget} black-box evaluations, {job.problem.initial_designs} initial feasible designs"
    )
    _run_with_display(job, "LaMBO-2 rounds")


def load_design_config(config: str | Path, overrides: list[str]) -> dict:
    """Compose a design config (a shipped name such as ``ehrlich``, or a YAML path) with Hydra
    (``defaults`` lists and ``key=value`` overrides work)."""
    from cortex.configs import resolve_config
    from cortex.errors import ConfigError

    path = resolve_config(config, group="design")
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(path.resolve().parent), version_base=None):
            cfg = compose(config_name=path.stem, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"Cannot compose {path} with overrides {overrides}: {err}".replace("\n", " ")) from None
    data = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (problem, tree, lambo, surrogate, loop).")
    return data


def register(app: typer.Typer) -> None:
    app.command("design")(design_cmd)
    app.command("quickstart")(quickstart_cmd)
