"""Regression tasks: one Gaussian per example (``RegressionTask``) or per position (``SequenceRegressionTask``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from cortex._validate import Problems, check_type
from cortex.errors import DataError
from cortex.tasks.base import Batch, Task, stack_target_columns
from cortex.tasks.evaluation import RegressionAccumulator


def _nan_rows(values: list, limit: int = 10) -> list[int]:
    bad = []
    for i, v in enumerate(values):
        items = v if isinstance(v, (list, tuple)) else [v]
        if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in items):
            bad.append(i)
            if len(bad) >= limit:
                break
    return bad


@dataclass(eq=False)
class RegressionTask(Task):
    """Predict ``len(targets)`` real values per example with a Gaussian regressor leaf.

    Metrics: Spearman ρ, RMSE and Gaussian NLL of the ensemble's predictive distribution.
    The leaf's target standardization is fitted on the training split before training.

    Attributes:
        targets: numeric target columns (``out_dim = len(targets)``).
        nominal_label_var: label variance of the smoothing target (standardized units).
        allow_missing_targets: treat NaN/None targets as missing (ignored by the loss) instead of an error.
    """

    targets: list[str] = field(default_factory=list)
    nominal_label_var: float = 0.25 ** 2
    allow_missing_targets: bool = False

    kind: ClassVar[str] = "regression"
    leaf_kind: ClassVar[str] = "regressor"

    def check(self, problems: Problems) -> None:
        super().check(problems)
        where = f"tasks.{self.name}"
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if not isinstance(self.targets, (list, tuple)) or not self.targets or not all(isinstance(t, str) for t in self.targets):
            problems.add(f"{where}.targets={self.targets!r} must be a non-empty list of numeric column names.")
        else:
            self.targets = list(self.targets)
        if check_type(f"{where}.nominal_label_var", self.nominal_label_var, (int, float), problems) and self.nominal_label_var <= 0:
            problems.add(f"{where}.nominal_label_var={self.nominal_label_var} must be > 0.")
        check_type(f"{where}.allow_missing_targets", self.allow_missing_targets, (bool,), problems)

    def extra_leaf_fields(self) -> dict[str, Any]:
        return {"out_dim": len(self.targets), "nominal_label_var": float(self.nominal_label_var)}

    def target_columns(self) -> list[str]:
        return list(self.targets)

    def check_targets(self, dataset, split: str) -> None:
        for col in self.targets:
            values = dataset[col]
            if not self.allow_missing_targets:
                bad = _nan_rows(list(values))
                if bad:
                    raise DataError(
                        f"Task {self.name!r}: target column {col!r} of the {split} split has NaN/missing values at "
                        f"rows {bad}; drop those rows, or set allow_missing_targets=true to ignore them in the loss."
                    )
            first = next((v for v in values if v is not None), None)
            if isinstance(first, (list, tuple)):
                raise DataError(
                    f"Task {self.name!r}: target column {col!r} holds lists; use a sequence_regression task for "
                    "per-position targets."
                )
            if first is not None and not isinstance(first, (int, float)):
                raise DataError(f"Task {self.name!r}: target column {col!r} is not numeric (e.g. {first!r}).")

    def fit(self, tree, train) -> None:
        y = torch.tensor([[float("nan") if v is None else float(v) for v in train[c]] for c in self.targets]).T
        tree.fit_target_standardization(self.leaf_key, y)

    def leaf_targets(self, batch: Batch) -> torch.Tensor:
        """``(B, len(targets))`` float targets (NaN = missing)."""
        return stack_target_columns(batch, self.targets, self.name)

    def new_metrics(self) -> RegressionAccumulator:
        return RegressionAccumulator()

    def update_metrics(self, metrics, tree, outputs, batch: Batch) -> None:
        out = outputs.leaf_outputs[self.leaf_key]
        metrics.update(out.loc, out.scale, stack_target_columns(batch, self.targets, self.name))


@dataclass(eq=False)
class SequenceRegressionTask(Task):
    """Predict a real value at every position of the task's root (``target`` holds one list per row).

    Each row's target list must have one value per token of the root's tokenized input (char-level
    roots: one per character); NaN marks unlabelled positions. Metrics as :class:`RegressionTask`,
    over all labelled positions.

    Attributes:
        target: column of per-position value lists.
        nominal_label_var: label variance of the smoothing target (standardized units).
    """

    target: str = ""
    nominal_label_var: float = 0.25 ** 2

    kind: ClassVar[str] = "sequence_regression"
    leaf_kind: ClassVar[str] = "sequence_regressor"

    def check(self, problems: Problems) -> None:
        super().check(problems)
        where = f"tasks.{self.name}"
        if not isinstance(self.target, str) or not self.target:
            problems.add(f"{where}.target={self.target!r} must name the column of per-position value lists.")
        if check_type(f"{where}.nominal_label_var", self.nominal_label_var, (int, float), problems) and self.nominal_label_var <= 0:
            problems.add(f"{where}.nominal_label_var={self.nominal_label_var} must be > 0.")

    def extra_leaf_fields(self) -> dict[str, Any]:
        return {"out_dim": 1, "nominal_label_var": float(self.nominal_label_var)}

    def target_columns(self) -> list[str]:
        return [self.target]

    def check_targets(self, dataset, split: str) -> None:
        values = dataset[self.target]
        bad = [i for i, v in enumerate(values) if not isinstance(v, (list, tuple))]
        if bad:
            raise DataError(
                f"Task {self.name!r}: column {self.target!r} of the {split} split must hold one list of values per "
                f"row; rows {bad[:10]} do not."
            )
        from cortex.data.collators import ids_column

        ids_col = ids_column(self.root)
        if ids_col in dataset.column_names:
            mismatch = [i for i, (ids, t) in enumerate(zip(dataset[ids_col], values)) if len(ids) != len(t)]
            if mismatch:
                i = mismatch[0]
                raise DataError(
                    f"Task {self.name!r}: {len(mismatch)} rows of the {split} split have a target list whose length "
                    f"differs from the root's token count (row {i}: {len(values[i])} values, "
                    f"{len(dataset[ids_col][i])} tokens); give one value per token."
                )

    def fit(self, tree, train) -> None:
        flat = [float("nan") if x is None else float(x) for row in train[self.target] for x in row]
        tree.fit_target_standardization(self.leaf_key, torch.tensor(flat).reshape(-1, 1))

    def _targets(self, batch: Batch) -> torch.Tensor:
        """``(B, T, 1)`` targets padded with NaN to the root's padded length ``T``."""
        y = batch["targets"][self.target].float()
        T = batch["inputs"][self.root]["input_ids"].shape[1]
        if y.shape[1] < T:
            y = F.pad(y, (0, T - y.shape[1]), value=float("nan"))
        return y[:, :T, None]

    def leaf_targets(self, batch: Batch) -> torch.Tensor:
        """``(B, T, 1)`` per-position targets, NaN where unlabelled or padded."""
        return self._targets(batch)

    def new_metrics(self) -> RegressionAccumulator:
        return RegressionAccumulator()

    def update_metrics(self, metrics, tree, outputs, batch: Batch) -> None:
        out = outputs.leaf_outputs[self.leaf_key]  # (E, B, T, 1)
        y = self._targets(batch).to(out.loc.device)
        keep = torch.isfinite(y[..., 0]) & batch["inputs"][self.root]["attention_mask"].bool().to(y.device)
        metrics.update(out.loc[:, keep], out.scale[:, keep], y[keep])
