"""Run a validated training config end to end: data → tree → training → registry entry."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex.training.config import RunConfig, validate_config
from cortex.training.fit import FitResult, build_tree, check_tasks_against_tree, root_limits, run_training
from cortex.training.distributed import world


@dataclass
class ExperimentResult:
    """A finished run: the fit, the registry entry of the tree (``None`` when not registered or not
    rank 0), the run folder and the composed config."""

    fit: FitResult
    entry: Any = None
    output_dir: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


def default_output_dir(name: str) -> str:
    """``outputs/<name>/<YYYYmmdd-HHMMSS>`` under the working directory."""
    return str(Path("outputs") / name / time.strftime("%Y%m%d-%H%M%S"))


def run_experiment(cfg: Mapping[str, Any] | RunConfig, registry=None, callbacks: Iterable = ()) -> ExperimentResult:
    """Train the tree a composed config describes and register it.

    Steps: validate (all config problems at once), load each data source once and split it, learn
    class names, build the tree with one leaf per task (HF roots keep their pretrained weights), check
    tasks against the tree and the data (missing columns, NaN targets, empty splits), train, then on
    rank 0 write ``config.yaml`` into the run folder and register the tree as a ``tree`` entry
    whose parents are its HF roots' registry entries and whose metadata holds the composed config
    and the final metrics.
    """
    import lightning as L

    from cortex.training.datamodules import MultiTaskDataModule, TaskDataModule, load_splits

    run = cfg if isinstance(cfg, RunConfig) else validate_config(cfg)
    settings = run.settings
    if settings.output_dir is None:
        settings = settings.replace(output_dir=default_output_dir(run.output.name))
    L.seed_everything(settings.seed, workers=True, verbose=False)  # the tree's initial weights follow the seed

    used = list(dict.fromkeys(t.data for t in run.tasks))
    sources = {name: load_splits(run.data[name], name) for name in used}
    for task in run.tasks:
        task.prepare(sources[task.data]["train"])
    tree = build_tree(run.tree, run.tasks)
    check_tasks_against_tree(tree, run.tasks)

    tokenizers = tree.root_tokenizers()
    limits = root_limits(tree)
    cache: dict = {}
    modules = {
        task.name: TaskDataModule(
            task, sources[task.data], tokenizers, batch_size=settings.batch_size,
            eval_batch_size=settings.eval_batch_size, num_workers=settings.num_workers, seed=settings.seed,
            pad_to_multiple_of=settings.pad_to_multiple_of,
            truncation=settings.truncate_inputs or run.data[task.data].truncation,
            tokenized_cache=cache, **limits,
        )
        for task in run.tasks
    }
    fit = run_training(tree, run.tasks, MultiTaskDataModule(modules), settings, callbacks)

    entry = None
    if world()[1] == 0:
        _write_config(run.raw, settings.output_dir)
        if run.output.register:
            from cortex.models.neural_tree import register_tree

            entry = register_tree(
                tree, run.output.name, registry=registry, tags=["trained"],
                extra={
                    "config": _json_safe(run.raw),
                    "metrics": _json_safe(fit.metrics),
                    "tasks": {t.name: t.kind for t in run.tasks},
                    "run_dir": str(Path(settings.output_dir).resolve()),
                    "epochs": fit.epochs, "steps": fit.steps,
                },
            )
    return ExperimentResult(fit=fit, entry=entry, output_dir=settings.output_dir, config=dict(run.raw))


def _write_config(raw: Mapping[str, Any], folder: str) -> None:
    import yaml

    from cortex.hub.registry import atomic_write_text

    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(folder) / "config.yaml", yaml.safe_dump(_json_safe(raw), sort_keys=False))


def _json_safe(value: Any) -> Any:
    """NaN/inf → ``None`` and tuples → lists, so registry metadata is strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
