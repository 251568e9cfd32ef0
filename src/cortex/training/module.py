"""``NeuralTreeModule``: a NeuralTree trained on several tasks with Lightning.

The module is only the training logic: it holds the tree (the model), the tasks (losses and
metrics) and the settings; data comes from a :class:`~cortex.training.datamodules.MultiTaskDataModule`
and everything else (devices, precision, checkpoints, DDP/FSDP, logging) is Lightning's.

Training step, ``optimization="automatic"`` (default): one forward per task on that task's batch
(with its corruption), then one backward and one AdamW step on ``sum_t weight_t * loss_t``. Each
``loss_t`` is ``task.loss``, i.e. ``tree.loss``, and the sum is
:func:`~cortex.models.neural_tree.weighted_loss_sum`: the loss ``tree(..., targets=...)`` returns to
the HF Trainer, by the same code.
``optimization="per_leaf"`` is the original cortex scheme: per task (in a seeded random order) a
forward, backward and optimizer step. All randomness of corruption comes from generators seeded by
``(seed, epoch, batch, task)``, so resuming from a checkpoint repeats the uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule

from cortex.models.neural_tree import weighted_loss_sum
from cortex.tasks import Task, batch_size
from cortex.tasks.corruption import step_generator
from cortex.tasks.evaluation import MetricAccumulator
from cortex.training.distributed import gather_uneven
from cortex.training.settings import TrainSettings

VAL_SALT = 1_000_003  # keeps validation generators apart from training ones


def lr_lambda(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """LR multiplier at optimizer step ``step``: linear warm-up over ``warmup`` steps, then
    ``cosine`` / ``linear`` decay to ``min_ratio`` at ``total``, or ``constant``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)


class NeuralTreeModule(LightningModule):
    """Multi-task training of a :class:`~cortex.models.neural_tree.NeuralTreeModel`.

    Args:
        tree: the tree (its leaves must include every task's leaf).
        tasks: the tasks, each training one leaf.
        settings: :class:`~cortex.training.settings.TrainSettings`.

    Logged: ``train/loss`` per step and epoch, ``train/<task>/loss_step`` on logging steps and
    ``train/<task>/loss_epoch`` per epoch; after every validation
    ``val/<task>/<metric>``, ``val/<task>/loss`` and ``val/loss`` (the weighted sum). With EMA on,
    validation runs on the averaged weights. :attr:`history` keeps every validation's metrics.
    """

    def __init__(self, tree, tasks: Sequence[Task], settings: TrainSettings | None = None):
        super().__init__()
        self.tree = tree
        self.tasks: dict[str, Task] = {t.name: t for t in tasks}
        self.settings = settings or TrainSettings()
        self.automatic_optimization = self.settings.optimization == "automatic"
        # plain types only: checkpoints stay loadable with torch.load(weights_only=True)
        self.save_hyperparameters({
            "tree_config": tree.config.to_dict(),
            "tasks": {name: _plain(t.to_dict()) for name, t in self.tasks.items()},
            "settings": _plain(self.settings.to_dict()),
        })
        self.eval_tasks: list[str] = list(self.tasks)
        self.history: list[dict[str, float]] = []
        self.last_val_step: int | None = None
        self._metrics: dict[str, MetricAccumulator] = {}
        self._val_generators: dict[str, torch.Generator] = {}
        self._restored_rng: torch.Tensor | None = None
        self._epoch_sums: dict[str, list] = {}
        object.__setattr__(self, "_compiled", None)  # not a submodule: the state dict stays the tree's

    # -------------------------------------------------------------------------------- forward
    def forward(self, inputs, leaf_keys=None, corruption=None):
        """The tree's forward (compiled when ``settings.compile``)."""
        return self._tree_fn()(inputs, leaf_keys=leaf_keys, corruption=corruption)

    def _tree_fn(self):
        if not self.settings.compile:
            return self.tree
        if self._compiled is None:
            s = self.settings
            object.__setattr__(self, "_compiled", torch.compile(
                self.tree, backend=s.compile_backend, mode=s.compile_mode, fullgraph=s.compile_fullgraph,
            ))
        return self._compiled

    def _task_losses(self, batch: dict, training: bool, order: Sequence[str]) -> dict[str, tuple[torch.Tensor, int]]:
        out = {}
        for name in order:
            if name not in batch or batch[name] is None:
                continue
            task, tb = self.tasks[name], batch[name]
            corruption = task.corruption(self.tree, tb["inputs"], self._generator(name), training)
            outputs = self(tb["inputs"], [task.leaf_key], corruption)
            out[name] = (task.loss(self.tree, outputs, tb, corruption), batch_size(tb))
        return out

    def _generator(self, name: str) -> torch.Generator:
        index = list(self.tasks).index(name)
        step = self.current_epoch * 10_000_000 + self._batch_idx
        return step_generator(self.settings.seed, step, index)

    # ------------------------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int):
        self._batch_idx = batch_idx
        if self.automatic_optimization:
            losses = self._task_losses(batch, True, list(self.tasks))
            total = self._weighted_total(losses)
            self._log_train(losses, total)
            return total
        return self._per_leaf_step(batch)

    def _per_leaf_step(self, batch: dict) -> torch.Tensor:
        """Original cortex: one forward, backward and optimizer step per task, tasks in a seeded order."""
        opt, sched = self.optimizers(), self.lr_schedulers()
        g = step_generator(self.settings.seed, self.current_epoch * 10_000_000 + self._batch_idx, -1)
        names = [n for n in self.tasks if n in batch and batch[n] is not None]
        order = [names[i] for i in torch.randperm(len(names), generator=g).tolist()]
        losses = {}
        for name in order:
            opt.zero_grad()
            (loss, n), = self._task_losses(batch, True, [name]).values()
            self.manual_backward(self.tasks[name].weight * loss)
            if self.settings.gradient_clip_val is not None:
                self.clip_gradients(opt, gradient_clip_val=self.settings.gradient_clip_val, gradient_clip_algorithm="norm")
            opt.step()
            sched.step()
            losses[name] = (loss.detach(), n)
        total = self._weighted_total(losses)
        self._log_train(losses, total)
        return total

    def _weighted_total(self, losses: dict[str, tuple[torch.Tensor, int]]) -> torch.Tensor:
        """The tasks' losses combined as ``forward(targets=..., loss_weights=...)`` combines leaf losses."""
        return weighted_loss_sum({n: loss for n, (loss, _) in losses.items()}, {n: self.tasks[n].weight for n in losses})

    def _log_train(self, losses: dict[str, tuple[torch.Tensor, int]], total: torch.Tensor) -> None:
        # each self.log call costs about a millisecond of bookkeeping: per-task losses are logged on the
        # steps the logger writes anyway, and their epoch means come from running sums
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.log_dict({f"train/{name}/loss_step": loss.detach() for name, (loss, _) in losses.items()},
                          on_step=True, on_epoch=False)
        for name, (loss, n) in losses.items():
            sums = self._epoch_sums.setdefault(name, [torch.zeros((), device=loss.device), 0])
            sums[0] = sums[0] + loss.detach() * n
            sums[1] += n
        n_all = sum(n for _, n in losses.values()) or 1
        self.log("train/loss", total.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=n_all)

    def on_train_epoch_start(self) -> None:
        self._epoch_sums: dict[str, list] = {}

    def on_train_epoch_end(self) -> None:
        means = {f"train/{name}/loss_epoch": total / max(1, n) for name, (total, n) in self._epoch_sums.items()}
        if means:
            self.log_dict(means, on_step=False, on_epoch=True, sync_dist=True)

    def on_train_start(self) -> None:
        if self._restored_rng is not None:  # continue the interrupted run's random stream (dropout)
            torch.set_rng_state(self._restored_rng)
            self._restored_rng = None

    # ----------------------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "eval_tasks"):
            self.eval_tasks = list(dm.eval_tasks)
        self._metrics = {name: self.tasks[name].new_metrics() for name in self.eval_tasks}
        self._val_generators = {
            name: step_generator(self.settings.seed, VAL_SALT, list(self.tasks).index(name)) for name in self.eval_tasks
        }

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.eval_tasks[dataloader_idx]
        task = self.tasks[name]
        corruption = task.corruption(self.tree, batch["inputs"], self._val_generators[name], training=False)
        outputs = self(batch["inputs"], [task.leaf_key], corruption)
        loss = task.loss(self.tree, outputs, batch, corruption)
        metrics = self._metrics[name]
        metrics.add_loss(loss, batch_size(batch))
        task.update_metrics(metrics, self.tree, outputs, batch)

    def on_validation_epoch_end(self) -> None:
        values = self.compute_metrics("val")
        self.log_dict(values, sync_dist=False)  # already identical on every rank after the gather
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": float(self.current_epoch), "step": float(self.global_step), **values})
            self.last_val_step = self.global_step

    def compute_metrics(self, prefix: str) -> dict[str, float]:
        """``{prefix}/<task>/<metric>`` for every evaluated task, plus ``{prefix}/loss`` (weighted sum)."""
        values: dict[str, float] = {}
        total = 0.0
        for name, acc in self._metrics.items():
            for key, value in acc.compute(gather_uneven).items():
                values[f"{prefix}/{name}/{key}"] = float(value)
            total += self.tasks[name].weight * values.get(f"{prefix}/{name}/loss", 0.0)
        if self._metrics:
            values[f"{prefix}/loss"] = total
        return values

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "modules"):
            self.eval_tasks = [n for n, m in dm.modules.items() if "test" in m.splits]
            self._metrics = {name: self.tasks[name].new_metrics() for name in self.eval_tasks}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.compute_metrics("test"), sync_dist=False)

    # ------------------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        s = self.settings
        decay, no_decay = [], []
        for name, p in self.tree.named_parameters():
            if not p.requires_grad:
                continue
            # norms, biases and embeddings are not weight-decayed (the usual AdamW practice)
            (no_decay if p.dim() < 2 or "embed" in name or "norm" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=s.lr, betas=tuple(s.betas), eps=s.eps)
        total = self.total_optimizer_steps()
        warmup = s.warmup_steps or int(s.warmup_fraction * total)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_lambda(step, total, warmup, s.lr_schedule, s.min_lr_ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def total_optimizer_steps(self) -> int:
        """Optimizer steps of the whole run (per-leaf optimization steps once per task and batch)."""
        est = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        if not self.automatic_optimization and self.settings.max_steps == -1:
            est *= len(self.tasks)
        return max(1, est)

    # ----------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cortex"] = {"torch_rng_state": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("cortex", {}).get("torch_rng_state")
        if state is not None:
            self._restored_rng = state

    _batch_idx: int = 0


def _plain(value: Any) -> Any:
    """Lists, dicts and scalars only (tuples become lists) for hparams and checkpoints."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
