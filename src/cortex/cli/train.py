"""``cortex train``: compose a Hydra config from ``configs/``, validate it, train, register, summarize."""

from __future__ import annotations

import math
import os
import time

import typer

from cortex.cli._common import console


def train_cmd(
    overrides: list[str] = typer.Argument(
        None, help="Hydra overrides, e.g. experiment=ehrlich trainer.max_epochs=1 trainer.lr=3e-4 tasks.value.weight=2.",
        show_default=False,
    ),
    config_dir: str = typer.Option(None, "--config-dir", help="Folder holding train.yaml (default: cortex's configs/)."),
    show_config: bool = typer.Option(False, "--cfg", help="Print the composed, validated config and exit without training."),
    no_register: bool = typer.Option(False, "--no-register", help="Do not save the trained tree into the registry."),
) -> None:
    """Train a NeuralTree on several tasks from a composed config (configs/experiment/*.yaml).

    Example: cortex train experiment=ehrlich trainer.max_epochs=1
    """
    from cortex.training.config import compose_config, validate_config

    cfg = compose_config(overrides or [], config_dir)
    if no_register:
        cfg.setdefault("output", {})["register"] = False
    run = validate_config(cfg)  # every config problem, before any data or weights are touched
    if show_config:
        import yaml

        console.print(yaml.safe_dump(cfg, sort_keys=False), end="", markup=False)
        return
    from cortex.training.experiment import run_experiment

    tasks = ", ".join(f"{t.name} ({t.kind})" for t in run.tasks)
    if _main_process():
        console.print(f"[bold]cortex train[/]  tasks: {tasks}  epochs: {run.settings.max_epochs}")
    start = time.perf_counter()
    result = run_experiment(run)
    if _main_process():  # under DDP every rank runs this command; one summary is enough
        _summary(result, time.perf_counter() - start)


def _main_process() -> bool:
    """Rank 0 of a distributed run (Lightning's launcher re-runs this command for the other ranks)."""
    from cortex.training.distributed import world

    size, rank = world()
    if size > 1:
        return rank == 0
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _summary(result, seconds: float) -> None:
    """One screen: per-task metrics, where the model, checkpoints and logs went."""
    from rich.table import Table

    fit = result.fit
    by_task: dict[str, dict[str, float]] = {}
    for key, value in fit.metrics.items():
        parts = key.split("/")
        if len(parts) == 3:
            by_task.setdefault(parts[1], {})[parts[2]] = value
    table = Table("task", "metrics", title="final validation metrics", box=None, title_justify="left")
    for task, values in by_task.items():
        table.add_row(task, "  ".join(f"{k}={_fmt(v)}" for k, v in values.items()))
    if by_task:
        console.print(table)
    console.print(f"trained {fit.epochs} epochs, {fit.steps} steps in {seconds:.1f}s"
                  + (f"; last train loss {fit.train_loss:.4f}" if fit.train_loss is not None else ""))
    if result.entry is not None:
        from cortex.hub.registry import Registry

        console.print(f"[green]registered[/] tree [bold]{result.entry.name}[/] at {Registry().path(result.entry.name)}")
    if fit.last_checkpoint:
        console.print(f"checkpoints: {fit.checkpoint_dir} (resume with trainer.output_dir={result.output_dir} trainer.resume_from=last)")
    if fit.log_dir:
        console.print(f"logs: {fit.log_dir}/metrics.csv" + ("  tensorboard: " + str(result.output_dir) + "/tensorboard"
                                                             if "tensorboard" in result.config.get("trainer", {}).get("loggers", []) else ""))


def _fmt(v: float) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.4g}"


def register(app: typer.Typer) -> None:
    app.command("train", help="Train a multi-task NeuralTree from a Hydra config (e.g. cortex train experiment=ehrlich).")(train_cmd)
