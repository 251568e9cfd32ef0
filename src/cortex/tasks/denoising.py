"""Denoising language-model task: corrupt a root's tokens, predict the clean ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from cortex._validate import Problems
from cortex.tasks.base import Batch, Task
from cortex.tasks.corruption import draw_corruption
from cortex.tasks.evaluation import MaskedLMAccumulator


@dataclass(eq=False)
class DenoisingLMTask(Task):
    """Masked / substitution denoising LM on one root (``lm_root``, default the first input root).

    Every forward pass (training and evaluation) corrupts ``lm_root`` with fractions drawn from its
    noise schedule (scaled by ``corrupt_max_frac``); the loss is the cross-entropy of the clean ids
    at the corrupted positions. Evaluation draws its corruption from a fixed generator, so epochs
    are comparable. Metrics: masked-token accuracy and perplexity. No target column.

    Attributes:
        lm_root: the root whose tokens are denoised.
    """

    lm_root: str | None = None
    corrupt_max_frac: float = 1.0

    kind: ClassVar[str] = "denoising_lm"
    leaf_kind: ClassVar[str] = "denoising_lm"

    def check(self, problems: Problems) -> None:
        super().check(problems)
        if self.lm_root is not None and isinstance(self.inputs, dict) and self.lm_root not in self.inputs:
            problems.add(
                f"tasks.{self.name}.lm_root={self.lm_root!r} is not one of its inputs {list(self.inputs)}; "
                "name a root the task feeds."
            )

    @property
    def root(self) -> str:
        return self.lm_root or next(iter(self.inputs))

    def leaf_spec(self, branch: str) -> dict:
        # the denoising leaf smooths nothing by default: its targets are the clean tokens themselves
        return {"kind": self.leaf_kind, "branch": branch, "ensemble_size": self.ensemble_size,
                "num_layers": self.num_layers, "root": self.root}

    def target_columns(self) -> list[str]:
        return []

    def corruption(self, tree, inputs, generator: torch.Generator, training: bool):
        return {self.root: draw_corruption(tree, self.root, inputs[self.root], generator, self.corrupt_max_frac,
                                           self.corruption_kind)}

    def leaf_targets(self, batch: Batch) -> None:
        """None: the denoising leaf's targets are its root's clean ids, at the positions corrupted in the forward."""
        return None

    def new_metrics(self) -> MaskedLMAccumulator:
        return MaskedLMAccumulator()

    def update_metrics(self, metrics, tree, outputs, batch: Batch) -> None:
        root_out = outputs.root_outputs[self.root]
        metrics.update(outputs.leaf_outputs[self.leaf_key].logits, root_out.input_ids, root_out.is_corrupted)
