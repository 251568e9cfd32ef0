"""Batches for ``tree(**batch)`` with targets: what transformers' Trainer feeds a NeuralTree.

cortex's Lightning training keeps one batch per task and calls :meth:`Task.loss`; the HF Trainer
instead calls ``model(**batch)`` on one dataset and reads ``outputs["loss"]``. :class:`TaskCollator`
builds that batch: the padded inputs (:class:`~cortex.data.TreeCollator`), each task's leaf
targets (:meth:`Task.leaf_targets`) and its loss weight, so ``forward`` returns the same weighted
loss the Lightning module minimises.

Trainer settings a tree needs (documented ``TrainingArguments``, no subclassing):
``remove_unused_columns=False`` (the forward takes ``inputs``/``targets``, not dataset columns) and
``label_names=["targets"]`` (so evaluation computes the loss and hands the targets to
``compute_metrics``). Pass :func:`leaf_predictions` as the Trainer's ``preprocess_logits_for_metrics``
to get batch-first ensemble-mean predictions per leaf; the config's ``keys_to_ignore_at_inference``
already keeps root, trunk and branch features out of the gathered predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cortex.errors import ConfigError
from cortex.tasks.base import Task


class TaskCollator:
    """Tokenized rows → ``{"inputs": TreeInputs, "targets": {leaf: tensor}, "loss_weights": {leaf: weight}}``.

    Args:
        tasks: the tasks to train; every row must hold every task's target columns.
        tokenizers: root → tokenizer (``tree.root_tokenizers()``), for the pad ids.
        **collator_kwargs: ``pad_to`` / ``pad_to_multiple_of`` of :class:`~cortex.data.TreeCollator`.

    Tasks that corrupt their inputs (denoising, ``corrupt_train_inputs``) draw the corruption per
    step from the tree's noise schedule, which a collator cannot do; they are refused here (train
    them with :func:`cortex.training.fit_tree`) rather than trained on a loss that would be silently 0.
    """

    def __init__(self, tasks: Sequence[Task], tokenizers: Mapping[str, Any], **collator_kwargs):
        from cortex.data.collators import TreeCollator

        corrupting = [t.name for t in tasks if t.kind == "denoising_lm" or t.corrupt_train_inputs]
        if corrupting:
            raise ConfigError(
                f"Tasks {corrupting} corrupt their inputs at every step, which TaskCollator cannot draw; train them "
                "with cortex.training.fit_tree (Lightning), or set corrupt_train_inputs=False."
            )
        self.tasks = list(tasks)
        columns = list(dict.fromkeys(c for t in self.tasks for c in t.target_columns()))
        self.collator = TreeCollator.from_tokenizers(tokenizers, target_columns=columns, **collator_kwargs)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        from cortex.models.neural_tree.inputs import TreeInputs

        batch = self.collator(rows)
        return {
            "inputs": TreeInputs(batch["inputs"]),
            "targets": {t.leaf_key: t.leaf_targets(batch) for t in self.tasks},
            "loss_weights": {t.leaf_key: float(t.weight) for t in self.tasks},
        }


def leaf_predictions(leaf_outputs: Mapping[str, Any], labels: Any = None) -> dict[str, torch.Tensor]:
    """Leaf name → batch-first ensemble-mean prediction (``output.prediction()``), for the Trainer's
    ``preprocess_logits_for_metrics``: class probabilities ``(B, C)``, regression means ``(B, O)``..."""
    return {leaf: out.prediction() for leaf, out in leaf_outputs.items()}
