"""Training: Lightning multi-task training of NeuralTrees, and causal-LM fine-tuning of registry models.

Python API (no Hydra; what LaMBO-2 and the router call)::

    from cortex.tasks import RegressionTask, DenoisingLMTask
    from cortex.training import build_tree, fit_tree, TrainSettings

    tasks = [RegressionTask("value", inputs={"seq": "sequence"}, targets=["value"]),
             DenoisingLMTask("lm", inputs={"seq": "sequence"})]
    tree = build_tree({"roots": {"seq": {"kind": "conv1d", "tokenizer": "protein", "max_len": 32}},
                       "branches": {"b": {"kind": "conv1d"}}}, tasks)
    result = fit_tree(tree, tasks, train_rows, val_rows, TrainSettings(max_epochs=5, batch_size=16))
    result.tree                      # trained in place (EMA weights if ema_decay is set)
    result.metrics                   # {"val/value/spearman_rho": ..., "val/lm/perplexity": ..., "val/loss": ...}

``train``/``val`` are a ``datasets.Dataset``, a ``{column: list}`` dict or a pandas DataFrame shared
by all tasks, or ``{task_name: rows}``. Defaults are quiet (no progress bar, no Lightning logs, no
files unless ``output_dir`` is set). Refitting an already-trained tree (a new design round) is the
same call: the tree keeps its weights and the regression leaves refit their target standardization.

- :func:`fit_tree` → :class:`FitResult`; :func:`build_tree` / :func:`tree_config` add one leaf per task;
  :func:`evaluate` computes metrics without a Trainer.
- :class:`TrainSettings`: optimizer, schedule, precision, compile, EMA, devices/strategy, checkpoints.
- :class:`~cortex.training.module.NeuralTreeModule` (LightningModule) and the DataModules in
  :mod:`cortex.training.datamodules` for full control with your own ``lightning.Trainer``.
- :func:`~cortex.training.experiment.run_experiment` runs a composed Hydra config (``cortex train``).

Lightning is imported only when a training function runs, so ``import cortex.training`` is light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cortex.training.settings import TrainSettings

if TYPE_CHECKING:
    from cortex.training.fit import FitResult

_LAZY = {
    "FitResult": "cortex.training.fit",
    "add_task_leaves": "cortex.training.fit",
    "build_tree": "cortex.training.fit",
    "check_tasks_against_tree": "cortex.training.fit",
    "evaluate": "cortex.training.fit",
    "fit_tree": "cortex.training.fit",
    "run_training": "cortex.training.fit",
    "tree_config": "cortex.training.fit",
    "NeuralTreeModule": "cortex.training.module",
    "ExperimentResult": "cortex.training.experiment",
    "run_experiment": "cortex.training.experiment",
    "compose_config": "cortex.training.config",
    "validate_config": "cortex.training.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cortex.training' has no attribute {name!r}")


__all__ = ["TrainSettings", *_LAZY]
