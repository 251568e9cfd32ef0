"""What every task shares: which columns feed which roots, its leaf, its loss weight and its corruption.

A task owns the model ↔ data boundary for one leaf of a NeuralTree: it names the dataset columns
that feed each root and the target columns, builds the leaf dict it needs in the tree config,
checks a dataset before training (missing columns, NaN targets, empty splits), computes its loss
from a forward pass and accumulates its evaluation metrics. Kinds live in their own classes,
built from a config string through :data:`cortex.tasks.TASKS`.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from cortex._validate import (
    Problems,
    check_choice,
    check_fraction,
    check_positive,
    check_type,
)
from cortex.corruption import CORRUPTION_KINDS, CorruptionParams
from cortex.errors import ConfigError, DataError
from cortex.tasks.corruption import draw_corruption
from cortex.tasks.evaluation import MetricAccumulator

Batch = Mapping[str, Any]  # {"inputs": {root: {"input_ids", "attention_mask"}}, "targets": {column: tensor}}


@dataclass(eq=False)
class Task(abc.ABC):
    """Base of all tasks.

    Attributes:
        name: task name; also the default leaf name and the prefix of its logged metrics.
        inputs: root name → the text column that root reads (one entry per root of the tree).
        data: name of the data source in a training config (``data.<name>``); ``None`` in the Python API.
        leaf: leaf name in the tree (default ``name``).
        branch: branch the task's leaf reads when the task creates it (default: the tree's only branch).
        weight: weight of this task's loss in the summed training loss.
        ensemble_size: members of the leaf the task creates.
        num_layers: hidden layers of that leaf's head.
        corrupt_train_inputs: corrupt the task's inputs during training (discriminative input
            corruption) and smooth its labels by each example's corruption fraction.
        corrupt_max_frac: fractions drawn from the root's noise schedule are scaled by this.
        corruption_kind: ``mask`` | ``substitution`` | ``gaussian``; ``None`` = the root's own kind.
        balance_by: column to balance training batches by (round-robin minority upsampling).
    """

    name: str
    inputs: dict[str, str] = field(default_factory=dict)
    data: str | None = None
    leaf: str | None = None
    branch: str | None = None
    weight: float = 1.0
    ensemble_size: int = 1
    num_layers: int = 0
    corrupt_train_inputs: bool = False
    corrupt_max_frac: float = 0.5
    corruption_kind: str | None = None
    balance_by: str | None = None

    kind: ClassVar[str] = ""
    leaf_kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        problems = Problems()
        self.check(problems)
        problems.raise_if_any(f"task {self.name!r}")

    # --------------------------------------------------------------------------------- config
    def check(self, problems: Problems) -> None:
        """Record every problem of this task's fields (each names its field)."""
        where = f"tasks.{self.name}"
        if not isinstance(self.name, str) or not self.name:
            problems.add(f"task name {self.name!r} must be a non-empty string.")
        if not isinstance(self.inputs, Mapping) or not self.inputs:
            problems.add(
                f"{where}.inputs={self.inputs!r} must map each root to the column it reads, e.g. {{'protein': 'sequence'}}."
            )
        else:
            for root, col in self.inputs.items():
                if not isinstance(col, str) or not col:
                    problems.add(f"{where}.inputs.{root}={col!r} must be a column name.")
            self.inputs = dict(self.inputs)
        if check_type(f"{where}.weight", self.weight, (int, float), problems) and not self.weight >= 0:
            problems.add(f"{where}.weight={self.weight} must be >= 0.")
        check_positive(f"{where}.ensemble_size", self.ensemble_size, problems)
        check_positive(f"{where}.num_layers", self.num_layers, problems, minimum=0)
        check_type(f"{where}.corrupt_train_inputs", self.corrupt_train_inputs, (bool,), problems)
        check_fraction(f"{where}.corrupt_max_frac", self.corrupt_max_frac, problems)
        if self.corruption_kind is not None:
            check_choice(f"{where}.corruption_kind", self.corruption_kind, CORRUPTION_KINDS, problems)
        for name in ("data", "leaf", "branch", "balance_by"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                problems.add(f"{where}.{name}={value!r} must be a non-empty string or null.")

    @property
    def leaf_key(self) -> str:
        """The leaf this task trains."""
        return self.leaf or self.name

    @property
    def roots(self) -> list[str]:
        """Roots the task feeds (every root of the tree)."""
        return list(self.inputs)

    @property
    def root(self) -> str:
        """The root the leaf is tied to (label smoothing by corruption, per-position outputs)."""
        return next(iter(self.inputs))

    @property
    def text_columns(self) -> dict[str, str]:
        return dict(self.inputs)

    def leaf_spec(self, branch: str) -> dict[str, Any]:
        """The leaf dict this task needs in ``NeuralTreeConfig.leaves``."""
        spec = {"kind": self.leaf_kind, "branch": branch, "ensemble_size": self.ensemble_size,
                "num_layers": self.num_layers, "root": self.root}
        if self.corrupt_train_inputs:
            spec["label_smoothing"] = "corrupt_frac"
        return {**spec, **self.extra_leaf_fields()}

    def extra_leaf_fields(self) -> dict[str, Any]:
        """Kind-specific leaf fields (``out_dim``, ``num_classes``...)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The task as a plain dict (``kind`` included) that :func:`cortex.tasks.build_task` reads back."""
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            if f.init and f.name != "name":
                out[f.name] = getattr(self, f.name)
        return out

    # ---------------------------------------------------------------------------------- data
    @abc.abstractmethod
    def target_columns(self) -> list[str]:
        """Dataset columns the collator copies into ``batch["targets"]`` (after :meth:`encode`)."""

    def required_columns(self) -> list[str]:
        """Raw dataset columns the task reads (before :meth:`encode`)."""
        cols = list(self.inputs.values()) + self.raw_target_columns()
        if self.balance_by is not None:
            cols.append(self.balance_by)
        return list(dict.fromkeys(cols))

    def raw_target_columns(self) -> list[str]:
        return self.target_columns()

    def prepare(self, train) -> None:
        """Learn what the task needs from the training split (class names...); default nothing."""

    def encode(self, dataset):
        """Map raw target columns to what the loss takes (e.g. class names to ids); default unchanged."""
        return dataset

    def check_dataset(self, dataset, split: str) -> None:
        """Raise :class:`~cortex.errors.DataError` if ``dataset`` cannot train or evaluate this task."""
        if dataset is None or len(dataset) == 0:
            raise DataError(
                f"Task {self.name!r}: the {split} split is empty. Check the data source, its split names "
                "(data.<source>.splits) or lower val_fraction."
            )
        columns = list(dataset.column_names)
        missing = [c for c in self.required_columns() if c not in columns]
        if missing:
            raise DataError(
                f"Task {self.name!r}: the {split} split has no column(s) {missing}; its columns are {columns}. "
                "Fix the task's inputs/targets, or rename columns with data.<source>.columns {old: new}."
            )
        for col in self.inputs.values():
            bad = [i for i, v in enumerate(dataset[col]) if not isinstance(v, str)]
            if bad:
                raise DataError(
                    f"Task {self.name!r}: text column {col!r} of the {split} split has empty or non-text values at "
                    f"rows {bad[:10]}; drop or fill those rows."
                )
        self.check_targets(dataset, split)

    def check_targets(self, dataset, split: str) -> None:
        """Kind-specific target checks."""

    def check_tree(self, tree, problems: Problems) -> None:
        """Record problems between this task and ``tree`` (missing leaf or root, wrong leaf kind)."""
        where = f"tasks.{self.name}"
        roots = list(tree.config.roots)
        unknown = [r for r in self.inputs if r not in roots]
        if unknown:
            problems.add(
                f"{where}.inputs names root(s) {unknown} that the tree lacks; its roots are {roots}. "
                "Rename the root or add it under tree.roots."
            )
        missing = [r for r in roots if r not in self.inputs]
        if missing:
            problems.add(
                f"{where}.inputs has no column for root(s) {missing}; a NeuralTree forward needs every root, "
                f"so map each of {roots} to a column."
            )
        leaves = tree.config.leaves
        if self.leaf_key not in leaves:
            problems.add(
                f"{where}: the tree has no leaf {self.leaf_key!r} (leaves: {sorted(leaves)}); build the tree with "
                "cortex.training.tree_config(..., tasks) so each task adds its leaf, or set the task's leaf."
            )
        elif leaves[self.leaf_key]["kind"] != self.leaf_kind:
            problems.add(
                f"{where}: leaf {self.leaf_key!r} is a {leaves[self.leaf_key]['kind']} leaf but a {self.kind} task "
                f"needs a {self.leaf_kind} leaf."
            )

    def fit(self, tree, train) -> None:
        """Fit leaf state on the training split before training (target standardization); default nothing."""

    # ------------------------------------------------------------------------------ training
    def corruption(
        self, tree, inputs: Mapping[str, Mapping[str, torch.Tensor]], generator: torch.Generator, training: bool
    ) -> dict[str, CorruptionParams] | None:
        """Corruption of the inputs for one forward pass, or ``None`` (clean inputs).

        Discriminative tasks corrupt only in training and only when ``corrupt_train_inputs``.
        """
        if not (training and self.corrupt_train_inputs):
            return None
        return {root: draw_corruption(tree, root, inputs[root], generator, self.corrupt_max_frac, self.corruption_kind)
                for root in self.roots}

    @abc.abstractmethod
    def leaf_targets(self, batch: Batch) -> torch.Tensor | None:
        """This task's leaf targets from a collated batch (what ``tree(..., targets={leaf: ...})`` takes);
        ``None`` for a leaf whose targets come from the forward itself (denoising)."""

    def loss(self, tree, outputs, batch: Batch, corruption: dict[str, CorruptionParams] | None = None) -> torch.Tensor:
        """Scalar loss of this task's leaf for ``outputs = tree(batch["inputs"], [leaf], corruption)``.

        It is ``tree.loss`` (:meth:`~cortex.models.neural_tree.NeuralTreeModel.loss`), the definition
        ``forward(targets=...)`` and so the HF Trainer use: corrupted inputs smooth labels through the
        leaf's ``label_smoothing="corrupt_frac"``, which :meth:`leaf_spec` sets with ``corrupt_train_inputs``.
        """
        return tree.loss(outputs, {self.leaf_key: self.leaf_targets(batch)})

    @abc.abstractmethod
    def new_metrics(self) -> MetricAccumulator:
        """A fresh accumulator of this task's evaluation metrics."""

    @abc.abstractmethod
    def update_metrics(self, metrics: MetricAccumulator, tree, outputs, batch: Batch) -> None:
        """Add one evaluation batch to ``metrics``."""

    def smoothing(self, corruption: dict[str, CorruptionParams] | None) -> torch.Tensor | None:
        """Per-example label smoothing: the corruption fraction of the task's root, when corrupted."""
        if corruption is None or self.root not in corruption:
            return None
        return corruption[self.root].frac


def batch_size(batch: Batch) -> int:
    """Number of examples in a collated batch."""
    first = next(iter(batch["inputs"].values()))
    return int(first["input_ids"].shape[0])


def stack_target_columns(batch: Batch, columns: list[str], task: str) -> torch.Tensor:
    """``(B, len(columns))`` float targets from ``batch["targets"]``."""
    try:
        cols = [batch["targets"][c].float().reshape(-1) for c in columns]
    except KeyError as e:
        raise DataError(f"Task {task!r}: batch has no target column {e.args[0]!r}; collate with its target_columns().") from None
    return torch.stack(cols, dim=-1)


def unknown_task_kind(kind: Any, kinds) -> ConfigError:
    return ConfigError.bad_choice("task kind", kind, kinds)
