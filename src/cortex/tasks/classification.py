"""Classification task: one class per example from a label column (ids or names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from cortex._validate import Problems, check_positive
from cortex.errors import DataError
from cortex.tasks.base import Batch, Task
from cortex.tasks.evaluation import ClassificationAccumulator


@dataclass(eq=False)
class ClassificationTask(Task):
    """Predict one of ``num_classes`` classes per example with a classifier leaf.

    Labels are integer ids ``0..C-1`` or names; names are mapped to ids by ``classes`` (given, or
    learned from the training split in sorted order by :meth:`prepare`). Metrics: accuracy,
    AUROC (macro one-vs-rest for ``C > 2``) and expected calibration error.

    Attributes:
        target: label column (e.g. HF ``label``).
        num_classes: number of classes; default from ``classes`` or the training labels.
        classes: class names in id order (for name labels).
    """

    target: str = ""
    num_classes: int | None = None
    classes: list[str] | None = None

    kind: ClassVar[str] = "classification"
    leaf_kind: ClassVar[str] = "classifier"

    def check(self, problems: Problems) -> None:
        super().check(problems)
        where = f"tasks.{self.name}"
        if not isinstance(self.target, str) or not self.target:
            problems.add(f"{where}.target={self.target!r} must name the label column.")
        if self.num_classes is not None:
            check_positive(f"{where}.num_classes", self.num_classes, problems, minimum=2)
        if self.classes is not None:
            if not isinstance(self.classes, (list, tuple)) or len(set(map(str, self.classes))) != len(self.classes) \
                    or len(self.classes) < 2:
                problems.add(f"{where}.classes={self.classes!r} must be a list of at least 2 distinct names.")
            else:
                self.classes = [str(c) for c in self.classes]
                if self.num_classes is not None and self.num_classes != len(self.classes):
                    problems.add(f"{where}.num_classes={self.num_classes} but classes lists {len(self.classes)} names.")

    @property
    def label_column(self) -> str:
        """The column holding class ids after :meth:`encode`."""
        return f"{self.name}.label_id" if self.classes is not None else self.target

    def target_columns(self) -> list[str]:
        return [self.label_column]

    def raw_target_columns(self) -> list[str]:
        return [self.target]

    def extra_leaf_fields(self) -> dict[str, Any]:
        if self.num_classes is None:
            raise DataError(
                f"Task {self.name!r} does not know its number of classes yet; set num_classes or classes, or call "
                "prepare(train) on the training split first."
            )
        return {"num_classes": int(self.num_classes)}

    def prepare(self, train) -> None:
        if self.target not in train.column_names:
            return  # check_dataset reports the missing column
        labels = [v for v in train[self.target] if v is not None]
        if not labels:
            return
        if any(isinstance(v, str) for v in labels):
            if self.classes is None:
                self.classes = sorted(set(map(str, labels)))
            self.num_classes = self.num_classes or len(self.classes)
        elif self.num_classes is None and self.classes is None:
            self.num_classes = max(2, int(max(labels)) + 1)
        elif self.num_classes is None:
            self.num_classes = len(self.classes)

    def encode(self, dataset):
        if self.classes is None or self.target not in dataset.column_names:
            return dataset
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({str(v) for v in dataset[self.target] if str(v) not in index})
        if unknown:
            raise DataError(
                f"Task {self.name!r}: labels {unknown[:10]} in column {self.target!r} are not among classes "
                f"{self.classes}; add them to classes or drop those rows."
            )
        col = self.label_column
        if col in dataset.column_names:
            dataset = dataset.remove_columns(col)
        return dataset.add_column(col, [index[str(v)] for v in dataset[self.target]])

    def check_targets(self, dataset, split: str) -> None:
        values = list(dataset[self.target])
        missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and v != v)]
        if missing:
            raise DataError(
                f"Task {self.name!r}: label column {self.target!r} of the {split} split is missing at rows "
                f"{missing[:10]}; drop or label those rows."
            )
        if self.classes is None:
            # ids 0..C-1; bools are the ids 0 and 1 (e.g. a `correct` column)
            bad = [i for i, v in enumerate(values) if not isinstance(v, int) or not 0 <= v < (self.num_classes or 2**31)]
            if bad:
                raise DataError(
                    f"Task {self.name!r}: label column {self.target!r} of the {split} split has values outside "
                    f"0..{(self.num_classes or 2) - 1} at rows {bad[:10]} (e.g. {values[bad[0]]!r}); give class ids "
                    "or set classes: [names...]."
                )

    def leaf_targets(self, batch: Batch) -> torch.Tensor:
        """Class ids ``(B,)``."""
        return batch["targets"][self.label_column]

    def new_metrics(self) -> ClassificationAccumulator:
        return ClassificationAccumulator()

    def update_metrics(self, metrics, tree, outputs, batch: Batch) -> None:
        metrics.update(outputs.leaf_outputs[self.leaf_key].logits, batch["targets"][self.label_column].reshape(-1).cpu())

    def label_counts(self, dataset) -> dict[Any, int]:
        """Rows per label in ``dataset`` (for the majority-class baseline and balance reports)."""
        counts: dict[Any, int] = {}
        for v in dataset[self.target]:
            counts[v] = counts.get(v, 0) + 1
        return counts
