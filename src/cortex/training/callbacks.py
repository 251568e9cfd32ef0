"""Callbacks of a training run: weight averaging (Lightning's own EMA), checkpoints, progress.

Weight averaging is Lightning 2.x's ``EMAWeightAveraging`` (a ``WeightAveraging`` callback that
updates an ``AveragedModel`` after every optimizer step, swaps the averaged weights in for
validation, copies them into the model when training ends, and stores both the averaged
``state_dict`` and the raw ``current_model_state`` in checkpoints). It replaces the original
cortex's averaging in a Lightning hook that no longer runs.

Only parameters are averaged (``use_buffers=False``): a tree's buffers are lookup tables (integer
substitution tables, corruptible-token masks) and fitted target statistics that training never
changes, and an exponential average of integer tables would round them wrongly.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint

from cortex.training.settings import TrainSettings


def ema_callback(settings: TrainSettings) -> EMAWeightAveraging | None:
    """Lightning's EMA callback configured from ``settings`` (``None`` when ``ema_decay`` is off)."""
    if settings.ema_decay is None:
        return None
    return EMAWeightAveraging(
        decay=float(settings.ema_decay), use_buffers=False,
        update_starting_at_step=settings.ema_start_step or None,
    )


def checkpoint_callback(settings: TrainSettings, has_val: bool) -> ModelCheckpoint | None:
    """``last.ckpt`` every epoch (for resuming) plus the best by ``settings.monitor`` when there is validation."""
    if settings.output_dir is None or not settings.checkpoint:
        return None
    return ModelCheckpoint(
        dirpath=str(Path(settings.output_dir) / "checkpoints"),
        filename="epoch{epoch:03d}-step{step:06d}",
        auto_insert_metric_name=False,
        save_last=True,
        save_top_k=1 if has_val else 0,
        monitor=settings.monitor if has_val else None,
        mode="min",
        every_n_epochs=1,
    )


def progress_callback() -> Callback:
    """A rich progress bar (falls back to tqdm when rich's live display is unavailable)."""
    try:
        from lightning.pytorch.callbacks import RichProgressBar

        return RichProgressBar(leave=True)
    except (ImportError, ModuleNotFoundError):  # rich missing: Lightning's default bar
        from lightning.pytorch.callbacks import TQDMProgressBar

        return TQDMProgressBar()
