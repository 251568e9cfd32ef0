"""``TrainSettings``: every run setting of multi-task training, typed and validated in one pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cortex._validate import (
    Problems,
    build_dataclass,
    check_bool,
    check_choice,
    check_fraction,
    check_int,
    check_non_empty,
    check_number,
    check_positive,
    check_type,
)
from cortex.errors import ConfigError

LR_SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZATIONS = ("automatic", "per_leaf")
PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "64-true")
LOGGERS = ("csv", "tensorboard")


@dataclass
class TrainSettings:
    """How to train a NeuralTree (the architecture lives in the tree's config, the data in the tasks).

    Attributes:
        max_epochs, max_steps: stop after whichever comes first (``max_steps=-1``: epochs only).
        batch_size, eval_batch_size: rows per task per training / evaluation step.
        lr, weight_decay, betas, eps: AdamW.
        lr_schedule: ``cosine`` | ``linear`` (decay to ``min_lr_ratio * lr``) | ``constant``, after
            ``warmup_steps`` of linear warm-up (or ``warmup_fraction`` of all steps).
        gradient_clip_val: clip the global gradient norm (``None``: off).
        optimization: ``automatic`` (one step on the weighted sum of task losses) or ``per_leaf``
            (the original cortex scheme: one forward, backward and optimizer step per task).
        precision: Lightning precision, e.g. ``32-true`` or ``bf16-mixed``.
        compile: run the tree's forward through ``torch.compile`` (``compile_backend``, ``compile_mode``,
            ``compile_fullgraph``).
        ema_decay: keep an exponential moving average of the weights (Lightning's
            ``EMAWeightAveraging``) used for validation and the saved model; ``None``: off.
        ema_start_step: first optimizer step that updates the average.
        seed: seeds initialization order, shuffling and corruption.
        accelerator, devices, strategy, num_nodes: Lightning's (``strategy: ddp`` / ``fsdp`` to scale out).
        num_threads: CPU threads for torch ops (``torch.set_num_threads``) during the run; ``None`` keeps
            torch's default. Small models on shared or busy CPUs train much faster on 1 thread.
        num_workers: DataLoader workers. pad_to_multiple_of: padding of token lengths.
        truncate_inputs: cut inputs longer than a root's ``max_len`` instead of raising.
        accumulate_grad_batches: gradient accumulation (automatic optimization only).
        check_val_every_n_epoch, val_check_interval, log_every_n_steps: Lightning's.
        output_dir: folder for checkpoints and logs (``None``: keep nothing on disk).
        loggers: any of ``csv``, ``tensorboard`` (written under ``output_dir``).
        checkpoint: save ``last.ckpt`` (every epoch) and the best by ``monitor`` under ``output_dir/checkpoints``.
        monitor: metric that picks the best checkpoint (``val/loss``; lower is better).
        resume_from: checkpoint to resume from, or ``last`` for ``output_dir/checkpoints/last.ckpt``.
        progress_bar: show a progress bar. quiet: silence Lightning's informational logs and warnings.
        deterministic: ask torch for deterministic kernels.
    """

    max_epochs: int = 10
    max_steps: int = -1
    batch_size: int = 32
    eval_batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    warmup_fraction: float = 0.0
    min_lr_ratio: float = 0.0
    gradient_clip_val: float | None = 1.0
    optimization: str = "automatic"
    precision: str = "32-true"
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str | None = None
    compile_fullgraph: bool = False
    ema_decay: float | None = None
    ema_start_step: int = 0
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    num_threads: int | None = None
    num_workers: int = 0
    pad_to_multiple_of: int | None = 8
    truncate_inputs: bool = False
    accumulate_grad_batches: int = 1
    check_val_every_n_epoch: int = 1
    val_check_interval: float | int | None = None
    log_every_n_steps: int = 10
    output_dir: str | None = None
    loggers: list[str] = field(default_factory=lambda: ["csv"])
    checkpoint: bool = True
    monitor: str = "val/loss"
    resume_from: str | None = None
    progress_bar: bool = False
    quiet: bool = True
    deterministic: bool = False

    def __post_init__(self) -> None:
        problems = Problems()
        self.check(problems)
        problems.raise_if_any("trainer")

    def check(self, problems: Problems, where: str = "trainer") -> None:
        """Record every problem, each naming its field and the accepted values."""
        check_positive(f"{where}.max_epochs", self.max_epochs, problems, minimum=0)
        check_int(f"{where}.max_steps", self.max_steps, problems, minimum=-1)  # -1: no limit
        check_positive(f"{where}.batch_size", self.batch_size, problems)
        if self.eval_batch_size is not None:
            check_positive(f"{where}.eval_batch_size", self.eval_batch_size, problems)
        for name in ("lr", "weight_decay", "eps"):
            check_number(f"{where}.{name}", getattr(self, name), problems, low=0)
        if not (isinstance(self.betas, (list, tuple)) and len(self.betas) == 2
                and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)):
            problems.add(f"{where}.betas={self.betas!r} must be two numbers in [0, 1), e.g. [0.9, 0.999].")
        else:
            self.betas = tuple(float(b) for b in self.betas)
        check_choice(f"{where}.lr_schedule", self.lr_schedule, LR_SCHEDULES, problems)
        check_positive(f"{where}.warmup_steps", self.warmup_steps, problems, minimum=0)
        check_fraction(f"{where}.warmup_fraction", self.warmup_fraction, problems, upper_open=True)
        check_fraction(f"{where}.min_lr_ratio", self.min_lr_ratio, problems)
        if self.gradient_clip_val is not None:  # null turns clipping off
            check_number(f"{where}.gradient_clip_val", self.gradient_clip_val, problems, low=0, low_open=True)
        check_choice(f"{where}.optimization", self.optimization, OPTIMIZATIONS, problems)
        if check_type(f"{where}.precision", self.precision, (str, int), problems):
            self.precision = str(self.precision)
            check_choice(f"{where}.precision", self.precision, PRECISIONS, problems)
        for name in ("compile", "compile_fullgraph", "truncate_inputs", "checkpoint", "progress_bar", "quiet",
                     "deterministic"):
            check_bool(f"{where}.{name}", getattr(self, name), problems)
        if self.ema_decay is not None:  # null turns EMA off; 0.999 is typical
            check_fraction(f"{where}.ema_decay", self.ema_decay, problems, lower_open=True, upper_open=True)
        check_positive(f"{where}.ema_start_step", self.ema_start_step, problems, minimum=0)
        check_type(f"{where}.seed", self.seed, (int,), problems)
        check_positive(f"{where}.num_nodes", self.num_nodes, problems)
        if self.num_threads is not None:
            check_positive(f"{where}.num_threads", self.num_threads, problems)
        check_positive(f"{where}.num_workers", self.num_workers, problems, minimum=0)
        if self.pad_to_multiple_of is not None:
            check_positive(f"{where}.pad_to_multiple_of", self.pad_to_multiple_of, problems)
        check_positive(f"{where}.accumulate_grad_batches", self.accumulate_grad_batches, problems)
        if self.optimization == "per_leaf" and self.accumulate_grad_batches != 1:
            problems.add(f"{where}.accumulate_grad_batches must be 1 with optimization='per_leaf' (it steps per task).")
        check_positive(f"{where}.check_val_every_n_epoch", self.check_val_every_n_epoch, problems)
        check_positive(f"{where}.log_every_n_steps", self.log_every_n_steps, problems)
        if not isinstance(self.loggers, (list, tuple)):
            problems.add(f"{where}.loggers={self.loggers!r} must be a list drawn from {', '.join(LOGGERS)}.")
        else:
            self.loggers = list(self.loggers)
            for name in self.loggers:
                check_choice(f"{where}.loggers", name, LOGGERS, problems)
        if self.resume_from is not None and self.resume_from == "last" and self.output_dir is None:
            problems.add(f"{where}.resume_from='last' needs {where}.output_dir (where last.ckpt lives).")
        if self.max_epochs == 0 and self.max_steps in (-1, 0):
            problems.add(f"{where}: max_epochs=0 and max_steps={self.max_steps} train nothing; raise one of them.")

    def replace(self, **changes: Any) -> "TrainSettings":
        """A validated copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out


def parse_settings(data: Mapping[str, Any] | TrainSettings | None, problems: Problems,
                   where: str = "trainer") -> TrainSettings | None:
    """Settings from a config dict, recording problems (unknown keys with the closest name)."""
    if data is None:
        return TrainSettings()
    if isinstance(data, TrainSettings):
        return data
    if not isinstance(data, Mapping):
        problems.add(f"{where} must be a dict of training settings; got {data!r}.")
        return None
    try:
        return build_dataclass(TrainSettings, data, where, problems)
    except ConfigError as e:  # every field problem, kept as data
        problems.extend(e.problems)
        return None


@dataclass
class FinetuneSettings:
    """Run settings of a fine-tune (saved in the new entry's metadata)."""

    max_steps: int = 100
    lr: float = 5e-4
    batch_size: int = 8
    block_size: int = 128
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: int = 16
    weight_decay: float = 0.0
    warmup_steps: int = 0
    save_every: int = 50
    seed: int = 0
    text_field: str = "text"

    def __post_init__(self) -> None:
        problems = Problems()
        for name in ("max_steps", "batch_size", "block_size", "save_every", "lora_rank", "lora_alpha"):
            check_positive(name, getattr(self, name), problems)
        check_positive("warmup_steps", self.warmup_steps, problems, minimum=0)
        check_number("lr", self.lr, problems, low=0, low_open=True)
        check_number("weight_decay", self.weight_decay, problems, low=0)
        check_bool("lora", self.lora, problems)
        check_type("seed", self.seed, (int,), problems)
        check_non_empty("text_field", self.text_field, problems)
        problems.raise_if_any("fine-tuning settings")
