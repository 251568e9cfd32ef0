"""Tasks: the model ↔ task ↔ data boundary of a NeuralTree, one class per kind.

A task maps dataset columns to roots and targets, creates its leaf (:meth:`Task.leaf_spec`), owns
its loss and its metrics, and optionally corrupts its training inputs (``corrupt_train_inputs``,
with label smoothing set to each example's corruption fraction).

===================== =========================== =====================================================
kind                  class                       metrics
===================== =========================== =====================================================
``regression``        :class:`RegressionTask`     ``spearman_rho``, ``rmse``, ``nll``
``classification``    :class:`ClassificationTask` ``accuracy``, ``auroc``, ``ece``
``denoising_lm``      :class:`DenoisingLMTask`    ``masked_acc``, ``perplexity``
``sequence_regression`` :class:`SequenceRegressionTask` ``spearman_rho``, ``rmse``, ``nll`` (per position)
===================== =========================== =====================================================

Build one from a config dict with :func:`build_task` (unknown keys and kinds are reported with
the closest valid name), or construct the class directly::

    RegressionTask("stability", inputs={"protein": "sequence"}, targets=["dG"])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cortex._validate import Problems, build_dataclass, check_choice
from cortex.errors import ConfigError
from cortex.tasks.base import Task, batch_size
from cortex.tasks.classification import ClassificationTask
from cortex.tasks.collate import TaskCollator, leaf_predictions
from cortex.tasks.denoising import DenoisingLMTask
from cortex.tasks.evaluation import (
    ClassificationAccumulator,
    MaskedLMAccumulator,
    MetricAccumulator,
    RegressionAccumulator,
)
from cortex.tasks.regression import RegressionTask, SequenceRegressionTask

TASKS: dict[str, type[Task]] = {
    "regression": RegressionTask,
    "classification": ClassificationTask,
    "denoising_lm": DenoisingLMTask,
    "sequence_regression": SequenceRegressionTask,
}


def parse_task(name: str, data: Any, problems: Problems) -> Task | None:
    """A task from its config dict, recording problems instead of raising (for whole-config validation)."""
    where = f"tasks.{name}"
    if isinstance(data, Task):
        return data
    if not isinstance(data, Mapping):
        problems.add(f"{where} must be a dict such as {{'kind': 'regression', 'inputs': {{...}}, 'targets': [...]}}; got {data!r}.")
        return None
    data = dict(data)
    kind = data.pop("kind", None)
    if kind is None:
        problems.add(f"{where}.kind is missing; choose one of {', '.join(TASKS)}.")
        return None
    if not check_choice(f"{where}.kind", kind, tuple(TASKS), problems):
        return None
    unknown = Problems()
    try:
        task = build_dataclass(TASKS[kind], data, where, unknown, name=name)
    except ConfigError as e:
        problems.extend(unknown)
        problems.extend(e.problems)  # the task's own validation, kept as data
        return None
    except TypeError as e:
        problems.extend(unknown)
        problems.add(f"{where}: {e}")
        return None
    problems.extend(unknown)
    return task if not unknown else None


def build_task(name: str, data: Mapping[str, Any] | Task) -> Task:
    """A task from ``{"kind": ..., **fields}``; raises one :class:`ConfigError` listing every problem."""
    problems = Problems()
    task = parse_task(name, data, problems)
    problems.raise_if_any(f"task {name!r}")
    return task


def build_tasks(tasks: Mapping[str, Mapping[str, Any] | Task] | Iterable[Task]) -> list[Task]:
    """Tasks from ``{name: dict | Task}`` or a list of :class:`Task`; all problems reported at once."""
    problems = Problems()
    out: list[Task] = []
    items = tasks.items() if isinstance(tasks, Mapping) else [(getattr(t, "name", str(i)), t) for i, t in enumerate(tasks)]
    for name, data in items:
        if not isinstance(data, (Mapping, Task)):
            problems.add(f"tasks.{name} must be a Task or a dict; got {type(data).__name__}.")
            continue
        task = parse_task(str(name), data, problems)
        if task is not None:
            out.append(task)
    if not out and not problems:
        problems.add("no tasks given; add at least one, e.g. tasks: {y: {kind: regression, inputs: {...}, targets: [...]}}.")
    names = [t.name for t in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.add(f"task names {dupes} are used twice; give every task its own name.")
    leaves = [t.leaf_key for t in out]
    shared = sorted({n for n in leaves if leaves.count(n) > 1})
    if shared:
        problems.add(f"leaves {shared} are trained by more than one task; give each task its own leaf.")
    problems.raise_if_any("tasks")
    return out


__all__ = [
    "TASKS", "ClassificationAccumulator", "ClassificationTask", "DenoisingLMTask", "MaskedLMAccumulator",
    "MetricAccumulator", "RegressionAccumulator", "RegressionTask", "SequenceRegressionTask", "Task", "batch_size",
    "TaskCollator", "build_task", "build_tasks", "leaf_predictions", "parse_task",
]
