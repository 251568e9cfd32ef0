"""Train a NeuralTree on tasks: the Python entry point (``fit_tree``) and the shared run loop.

``fit_tree`` is what other parts of cortex call (LaMBO-2 refits a tree every design round, the
router trains its tree): no Hydra, no files unless ``settings.output_dir`` is set, no progress bar
or Lightning chatter unless asked, and little fixed cost on tiny data. The CLI's ``cortex train``
goes through :func:`run_training` too, after composing and validating a Hydra config.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cortex._fit import torch_threads
from cortex._validate import Problems
from cortex.errors import ConfigError
from cortex.tasks import Task, build_tasks
from cortex.training.settings import TrainSettings, parse_settings


@dataclass
class FitResult:
    """What a training run produced.

    Attributes:
        tree: the trained tree (EMA weights when ``ema_decay`` is set), in eval mode.
        metrics: final validation metrics ``val/<task>/<metric>`` and ``val/loss`` of that tree
            (empty without validation data).
        history: every validation's metrics, with ``epoch`` and ``step``.
        train_loss: mean weighted training loss of the last epoch.
        epochs, steps: epochs completed and optimizer steps taken.
        seconds: wall time of the fit.
        checkpoint_dir, last_checkpoint, best_checkpoint, log_dir: where files went (``None`` if nowhere).
    """

    tree: Any
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    train_loss: float | None = None
    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0
    checkpoint_dir: str | None = None
    last_checkpoint: str | None = None
    best_checkpoint: str | None = None
    log_dir: str | None = None

    def task_metrics(self, task: str) -> dict[str, float]:
        """``{metric: value}`` of one task (``val/<task>/`` stripped)."""
        prefix = f"val/{task}/"
        return {k[len(prefix):]: v for k, v in self.metrics.items() if k.startswith(prefix)}


# ------------------------------------------------------------------------------------- tree setup
def add_task_leaves(tree: Mapping[str, Any], tasks: Sequence[Task]) -> dict[str, Any]:
    """A tree config dict whose ``leaves`` include one leaf per task (``task.leaf_spec``).

    ``tree`` holds ``roots``, ``trunk``, ``branches`` and optionally ``leaves``; a task's leaf goes on
    ``task.branch`` or, when the tree has one branch, on that one. Existing leaves are kept.
    """
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in tree.items()}
    branches = list((out.get("branches") or {}).keys())
    leaves = dict(out.get("leaves") or {})
    problems = Problems()
    for task in tasks:
        if task.leaf_key in leaves:
            continue
        branch = task.branch
        if branch is None:
            if len(branches) != 1:
                problems.add(
                    f"tasks.{task.name}.branch is not set and the tree has {len(branches)} branches {branches}; "
                    "name the branch its leaf should read."
                )
                continue
            branch = branches[0]
        try:
            leaves[task.leaf_key] = task.leaf_spec(branch)
        except ConfigError as e:
            problems.add(str(e))
    problems.raise_if_any("tree")
    out["leaves"] = leaves
    return out


def tree_config(tree: Mapping[str, Any], tasks: Sequence[Task]):
    """A validated :class:`~cortex.models.neural_tree.NeuralTreeConfig` with the tasks' leaves added."""
    from cortex.models.neural_tree import NeuralTreeConfig

    return NeuralTreeConfig(**add_task_leaves(tree, tasks))


def build_tree(tree: Mapping[str, Any], tasks: Sequence[Task], train: Any = None, pretrained_roots: bool = True):
    """A new NeuralTree for ``tasks``; HF roots hold their pretrained weights when ``pretrained_roots``.

    ``train`` (optional, any form :func:`fit_tree` takes) lets tasks learn what their leaf needs
    from the data first, e.g. a classification task's number of classes.
    """
    from cortex.models.neural_tree import NeuralTreeModel

    if train is not None:
        from cortex.training.datamodules import _as_dataset

        for task, splits in zip(tasks, per_task_splits(tasks, train).values()):
            if "train" in splits:
                task.prepare(_as_dataset(splits["train"]))
    config = tree_config(tree, tasks)
    if pretrained_roots and any(not spec.builtin for spec in config.root_specs().values()):
        return NeuralTreeModel.from_pretrained_roots(config)
    return NeuralTreeModel(config)


def root_limits(tree) -> dict[str, Any]:
    """Data-module arguments from the tree's roots: each root's length limit and which roots have a
    fixed built-in alphabet (their data must hold no unknown characters)."""
    specs = tree.config.root_specs()
    return {"max_lengths": {name: spec.limit for name, spec in specs.items()},
            "strict_vocab_roots": [name for name, spec in specs.items() if spec.builtin]}


def check_tasks_against_tree(tree, tasks: Sequence[Task]) -> None:
    """Every task/tree mismatch (missing leaf or root, wrong leaf kind) in one :class:`ConfigError`."""
    problems = Problems()
    for task in tasks:
        task.check_tree(tree, problems)
        leaf = tree.config.leaves.get(task.leaf_key)
        if leaf is not None and leaf["kind"] == "classifier" and task.kind == "classification" \
                and task.num_classes is not None and leaf["num_classes"] != task.num_classes:
            problems.add(
                f"tasks.{task.name}: the data has {task.num_classes} classes but leaf {task.leaf_key!r} has "
                f"num_classes={leaf['num_classes']}; rebuild the leaf or set the task's classes to match."
            )
    problems.raise_if_any("tasks and tree")


# ------------------------------------------------------------------------------------------- data
def _is_per_task(data: Any, tasks: Sequence[Task]) -> bool:
    names = {t.name for t in tasks}
    return isinstance(data, Mapping) and bool(data) and set(data) <= names and not any(
        isinstance(v, (list, tuple)) for v in data.values()
    )


def per_task_splits(tasks: Sequence[Task], train: Any, val: Any = None, test: Any = None) -> dict[str, dict[str, Any]]:
    """``{task: {"train": ..., "val": ..., "test": ...}}`` from shared or per-task data."""
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        splits = {}
        for role, data in (("train", train), ("val", val), ("test", test)):
            if data is None:
                continue
            if _is_per_task(data, tasks):
                if task.name in data:
                    splits[role] = data[task.name]
            else:
                splits[role] = data
        out[task.name] = splits
    return out


# -------------------------------------------------------------------------------------- the run
@contextlib.contextmanager
def _quiet(enabled: bool):
    """Silence Lightning's start-up logs and advisory warnings (tiny runs inside other tools)."""
    if not enabled:
        yield
        return
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    import datasets

    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # tokenization bars of Dataset.map
    try:
        with warnings.catch_warnings():
            from lightning.fabric.utilities.warnings import PossibleUserWarning

            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            for pattern in (".*does not have many workers.*", ".*smaller than the logging interval.*",
                            ".*Checkpoint directory .* exists and is not empty.*", ".*srun.*",
                            ".*Found current_model_state in the checkpoint.*", ".*treespec, LeafSpec.*"):
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _loggers(settings: TrainSettings) -> list:
    if settings.output_dir is None:
        return []
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    out = []
    if "csv" in settings.loggers:
        out.append(CSVLogger(save_dir=settings.output_dir, name="logs", version=""))
    if "tensorboard" in settings.loggers:
        out.append(TensorBoardLogger(save_dir=settings.output_dir, name="tensorboard", version="", default_hp_metric=False))
    return out


def resolve_resume(settings: TrainSettings) -> str | None:
    """The checkpoint path to resume from (``last`` → ``output_dir/checkpoints/last.ckpt``), checked to exist."""
    if settings.resume_from is None:
        return None
    path = Path(settings.output_dir) / "checkpoints" / "last.ckpt" if settings.resume_from == "last" \
        else Path(settings.resume_from).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"trainer.resume_from={settings.resume_from!r}: no checkpoint at {path}. Point it at a .ckpt file "
            "written by a previous run (output_dir/checkpoints/last.ckpt) or drop resume_from to start fresh."
        )
    return str(path)


def check_checkpoint(path: str, module) -> None:
    """Refuse a checkpoint whose weights do not fit ``module``'s tree, naming the differences.

    Loaded with ``weights_only=True``: a checkpoint is tensors and plain values, never code.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", {})
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} weights (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown weights (e.g. {unexpected[:3]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} with other shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise ConfigError(
            f"Checkpoint {path} was saved from a different tree architecture: {'; '.join(parts)}. Resume with the "
            "config it was trained with (its hyper_parameters.tree_config), or start fresh without resume_from."
        )


def run_training(tree, tasks: Sequence[Task], datamodule, settings: TrainSettings,
                 callbacks: Iterable = ()) -> FitResult:
    """Fit ``tree`` on ``tasks`` with data from a prepared :class:`~cortex.training.datamodules.MultiTaskDataModule`.

    Fits each task's leaf state on its training split (target standardization), builds the
    Lightning ``Trainer`` from ``settings`` (EMA, checkpoints, loggers, precision, strategy), trains
    (resuming if asked), validates the final weights and returns a :class:`FitResult`.
    """
    start = time.perf_counter()
    with torch_threads(settings.num_threads):
        return _run(tree, tasks, datamodule, settings, callbacks, start)


def _run(tree, tasks, datamodule, settings: TrainSettings, callbacks: Iterable, start: float) -> FitResult:
    import lightning as L

    from cortex.training.callbacks import (
        checkpoint_callback,
        ema_callback,
        progress_callback,
    )
    from cortex.training.module import NeuralTreeModule

    with _quiet(settings.quiet):
        L.seed_everything(settings.seed, workers=True, verbose=False)
        datamodule.setup("fit")
        for task in tasks:
            task.fit(tree, datamodule.modules[task.name].splits["train"])
        has_val = bool(datamodule.eval_tasks)
        module = NeuralTreeModule(tree, tasks, settings)
        resume = resolve_resume(settings)
        if resume is not None:
            check_checkpoint(resume, module)
        ckpt = checkpoint_callback(settings, has_val)
        cbs = [c for c in (ema_callback(settings), ckpt) if c is not None]
        if settings.progress_bar:
            cbs.append(progress_callback())
        cbs.extend(callbacks)
        loggers = _loggers(settings)
        automatic = settings.optimization == "automatic"
        strategy = settings.strategy
        untrained = set(tree.config.leaves) - {t.leaf_key for t in tasks}
        if strategy == "ddp" and (not automatic or untrained):
            # per-leaf steps (and leaves no task trains) leave parameters without gradients in a backward
            strategy = "ddp_find_unused_parameters_true"
        trainer = L.Trainer(
            max_epochs=settings.max_epochs, max_steps=settings.max_steps,
            accelerator=settings.accelerator, devices=settings.devices, strategy=strategy,
            num_nodes=settings.num_nodes, precision=settings.precision,
            gradient_clip_val=settings.gradient_clip_val if automatic else None,
            accumulate_grad_batches=settings.accumulate_grad_batches,
            check_val_every_n_epoch=settings.check_val_every_n_epoch,
            val_check_interval=settings.val_check_interval,
            limit_val_batches=None if has_val else 0,
            num_sanity_val_steps=0,
            log_every_n_steps=settings.log_every_n_steps,
            logger=loggers or False, callbacks=cbs, enable_checkpointing=ckpt is not None,
            enable_progress_bar=settings.progress_bar, enable_model_summary=not settings.quiet,
            deterministic=settings.deterministic, use_distributed_sampler=False,
            default_root_dir=settings.output_dir,
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        if has_val and module.last_val_step != trainer.global_step:
            trainer.validate(module, datamodule=datamodule, verbose=False)  # metrics of the final (averaged) weights
    tree.eval()
    metrics = {k: v for k, v in (module.history[-1] if module.history else {}).items() if k not in ("epoch", "step")}
    train_loss = trainer.callback_metrics.get("train/loss_epoch")
    log_dir = str(Path(settings.output_dir) / "logs") if settings.output_dir and "csv" in settings.loggers else None
    return FitResult(
        tree=tree, metrics=metrics, history=list(module.history),
        train_loss=None if train_loss is None else float(train_loss),
        epochs=int(trainer.current_epoch), steps=int(trainer.global_step),
        seconds=time.perf_counter() - start,
        checkpoint_dir=ckpt.dirpath if ckpt is not None else None,
        last_checkpoint=(ckpt.last_model_path or None) if ckpt is not None else None,
        best_checkpoint=(ckpt.best_model_path or None) if ckpt is not None else None,
        log_dir=log_dir,
    )


def fit_tree(
    tree,
    tasks: Sequence[Task] | Mapping[str, Task | Mapping[str, Any]],
    train: Any,
    val: Any = None,
    settings: TrainSettings | Mapping[str, Any] | None = None,
    *,
    test: Any = None,
    callbacks: Iterable = (),
) -> FitResult:
    """Train ``tree`` on ``tasks`` with Lightning and return the trained tree and its metrics.

    Args:
        tree: a :class:`~cortex.models.neural_tree.NeuralTreeModel` whose leaves include every
            task's leaf (build one with :func:`build_tree`). Trained in place.
        tasks: :class:`~cortex.tasks.Task` objects, or ``{name: task dict}`` (see :func:`cortex.tasks.build_task`).
        train: training rows for all tasks — a ``datasets.Dataset``, a ``{column: list}`` dict or a
            pandas DataFrame — or ``{task_name: rows}`` to give tasks their own data.
        val: validation rows in the same forms, or ``None`` (no validation, ``metrics`` empty).
        settings: :class:`~cortex.training.TrainSettings` or a dict of its fields. Defaults are quiet
            (no progress bar, no logs) and write nothing unless ``output_dir`` is set.
        test: optional test rows (evaluated after training into ``metrics`` as ``test/...``).
        callbacks: extra Lightning callbacks.

    Returns:
        :class:`FitResult` (``result.tree`` is ``tree``, trained; EMA weights when ``ema_decay`` is set).

    Raises:
        ConfigError: bad settings or tasks, or tasks that do not match the tree (all listed at once).
        DataError: a missing column, NaN targets (with their rows), an empty split, unknown characters.

    Example::

        tasks = [RegressionTask("value", inputs={"seq": "sequence"}, targets=["value"]),
                 DenoisingLMTask("lm", inputs={"seq": "sequence"})]
        tree = build_tree({"roots": {"seq": {"kind": "conv1d", "tokenizer": "protein", "max_len": 32}},
                           "branches": {"b": {"kind": "conv1d"}}}, tasks)
        result = fit_tree(tree, tasks, train_rows, val_rows, {"max_epochs": 5, "batch_size": 16})
        result.task_metrics("value")["spearman_rho"]
    """
    problems = Problems()
    task_list = build_tasks(tasks) if not (isinstance(tasks, Sequence) and all(isinstance(t, Task) for t in tasks)) \
        else list(tasks)
    parsed = parse_settings(settings, problems)
    problems.raise_if_any("fit_tree settings")
    from cortex.training.datamodules import MultiTaskDataModule, _as_dataset

    splits = per_task_splits(task_list, train, val, test)
    splits = {name: {role: _as_dataset(d) for role, d in roles.items()} for name, roles in splits.items()}
    for task in task_list:
        if "train" in splits[task.name]:
            task.prepare(splits[task.name]["train"])
    check_tasks_against_tree(tree, task_list)
    datamodule = MultiTaskDataModule.build(
        task_list, splits, tree.root_tokenizers(), batch_size=parsed.batch_size,
        eval_batch_size=parsed.eval_batch_size, num_workers=parsed.num_workers, seed=parsed.seed,
        pad_to_multiple_of=parsed.pad_to_multiple_of, truncation=parsed.truncate_inputs, **root_limits(tree),
    )
    result = run_training(tree, task_list, datamodule, parsed, callbacks)
    if test is not None:
        result.metrics.update(evaluate(tree, task_list, datamodule, parsed, role="test"))
    return result


def evaluate(tree, tasks: Sequence[Task], datamodule, settings: TrainSettings, role: str = "val") -> dict[str, float]:
    """Metrics ``{role}/<task>/<metric>`` of ``tree`` on the datamodule's ``val`` or ``test`` split (eager, no Trainer)."""
    from cortex.tasks.corruption import step_generator
    from cortex.training.module import VAL_SALT

    names = list(t.name for t in tasks)
    tree.eval()
    device = next(tree.parameters()).device
    out: dict[str, float] = {}
    total = 0.0
    with torch.no_grad():
        for i, task in enumerate(tasks):
            loader = datamodule.modules[task.name].eval_dataloader(role)
            if loader is None:
                continue
            acc = task.new_metrics()
            g = step_generator(settings.seed, VAL_SALT, names.index(task.name))
            for batch in loader:
                batch = _to_device(batch, device)
                corruption = task.corruption(tree, batch["inputs"], g, training=False)
                outputs = tree(batch["inputs"], [task.leaf_key], corruption)
                loss = task.loss(tree, outputs, batch, corruption)
                acc.add_loss(loss, int(batch["inputs"][task.root]["input_ids"].shape[0]))
                task.update_metrics(acc, tree, outputs, batch)
            for k, v in acc.compute().items():
                out[f"{role}/{task.name}/{k}"] = float(v)
            total += task.weight * out.get(f"{role}/{task.name}/loss", 0.0)
    if out:
        out[f"{role}/loss"] = total
    return out


def _to_device(batch, device):
    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch
