"""The autoencoder detector: trained on normal history, threshold at a validation quantile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cortex._validate import Problems, check_number, check_positive, check_type
from cortex.anomaly.features import FeatureScaler, sliding_windows
from cortex.anomaly.metrics import FIELDS, MetricRow, by_worker, values_array
from cortex.errors import AnomalyError


@dataclass
class AutoencoderConfig:
    """Training settings of :class:`AutoencoderDetector`.

    Args:
        window: rows per window (a row is scored with the ``window - 1`` rows before it).
        hidden_size / latent_size: autoencoder widths.
        epochs / batch_size / lr / weight_decay: AdamW training on normal windows.
        val_fraction: the last share of each worker's windows held out (in time, so overlapping
            windows do not leak) to pick the best epoch and set the threshold.
        threshold_quantile: the threshold is this quantile of validation errors.
        min_worker_rows: a worker with at least this much history gets its own feature scaling;
            others (and workers never seen) use the pooled scaling.
        seed: torch and numpy seed.
    """

    window: int = 8
    hidden_size: int = 32
    latent_size: int = 6
    epochs: int = 60
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    threshold_quantile: float = 0.995
    min_worker_rows: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        problems = Problems()
        for name in ("hidden_size", "latent_size", "epochs", "batch_size", "min_worker_rows"):
            check_positive(f"autoencoder.{name}", getattr(self, name), problems)
        check_positive("autoencoder.window", self.window, problems, minimum=2)  # a window is a short history
        check_number("autoencoder.val_fraction", self.val_fraction, problems, 0.05, 0.5)
        check_number("autoencoder.threshold_quantile", self.threshold_quantile, problems, 0.5, 1, high_open=True)
        check_number("autoencoder.lr", self.lr, problems, low=0, low_open=True)
        check_number("autoencoder.weight_decay", self.weight_decay, problems, low=0)
        check_type("autoencoder.seed", self.seed, (int,), problems)
        problems.raise_if_any("autoencoder settings")


@dataclass
class TrainReport:
    """How training went: windows used, best epoch, losses, and the threshold set."""

    train_windows: int
    val_windows: int
    best_epoch: int
    train_loss: float
    val_loss: float
    threshold: float


class AutoencoderDetector:
    """Scores a row by the reconstruction error of the window ending at it."""

    kind: ClassVar[str] = "autoencoder"

    def __init__(self, model, scaler: FeatureScaler, threshold: float, config: AutoencoderConfig,
                 report: TrainReport | None = None, worker_scalers: dict[str, FeatureScaler] | None = None):
        self.model = model.eval()
        self.scaler = scaler
        self.worker_scalers = worker_scalers or {}
        self.threshold = threshold
        self.config = config
        self.report = report

    @property
    def context(self) -> int:
        return self.config.window

    def window_errors(self, z_windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scaled windows ``(B, W*F)`` → errors ``(B,)`` and per-feature errors ``(B, F)``."""
        import torch

        if len(z_windows) == 0:
            return np.zeros(0), np.zeros((0, len(FIELDS)))
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.array(z_windows, dtype=np.float32)))  # a copy: windows are read-only views
        return out.errors.double().numpy(), out.feature_errors.double().numpy()

    def scaler_for(self, worker: str) -> FeatureScaler:
        """The worker's own scaler if it was in the training history, else the pooled one."""
        return self.worker_scalers.get(worker, self.scaler)

    def score_array(self, values: np.ndarray, worker: str) -> tuple[np.ndarray, np.ndarray]:
        w = self.config.window
        n = values.shape[0]
        scores = np.full(n, np.nan)
        top = np.zeros(n, dtype=np.int64)
        if n >= w:
            err, ferr = self.window_errors(sliding_windows(self.scaler_for(worker)(values), w))
            scores[w - 1 :] = err
            top[w - 1 :] = ferr.argmax(1)
        return scores, top

    @classmethod
    def fit(cls, rows: list[MetricRow], config: AutoencoderConfig | None = None,
            progress: Callable[[int, int, float], None] | None = None) -> "AutoencoderDetector":
        """Train on normal ``rows`` (all workers pooled); ``progress(epoch, epochs, val_loss)`` per epoch."""
        import torch

        from cortex._fit import BestWeights, optimizer_step
        from cortex.anomaly.model import MetricAutoencoder, MetricAutoencoderConfig

        config = config or AutoencoderConfig()
        scaler = FeatureScaler.fit(values_array(rows))
        # Workers differ in their normal levels (a slow model, a verbose one): each is scaled by its
        # own history, so a blow-up is judged against that worker, not against the pool.
        worker_scalers: dict[str, FeatureScaler] = {}
        train, val = [], []
        for worker, idx in by_worker(rows).items():
            vals = values_array([rows[i] for i in idx])
            if len(idx) >= config.min_worker_rows:
                worker_scalers[worker] = FeatureScaler.fit(vals)
            win = sliding_windows(worker_scalers.get(worker, scaler)(vals), config.window)
            cut = int(round(len(win) * (1 - config.val_fraction)))
            # drop the window-1 windows straddling the cut so no row is in both splits
            train.append(win[: max(cut - config.window + 1, 0)])
            val.append(win[cut:])
        x_train, x_val = np.concatenate(train), np.concatenate(val)
        if len(x_train) < 50 or len(x_val) < 20:
            raise AnomalyError(
                f"Only {len(x_train)} training and {len(x_val)} validation windows of {config.window} rows; "
                f"the detector needs at least 50 and 20. Give more normal history (a few hundred rows per worker)."
            )
        torch.manual_seed(config.seed)
        z_train = x_train.reshape(-1, len(FIELDS))
        lo, hi = z_train.min(0), z_train.max(0)
        pad = 0.1 * (hi - lo) + 1e-3  # a little room beyond the normal range seen
        model = MetricAutoencoder(MetricAutoencoderConfig(
            n_features=len(FIELDS), window=config.window, hidden_size=config.hidden_size,
            latent_size=config.latent_size, output_low=(lo - pad).tolist(), output_high=(hi + pad).tolist()))
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        xt, xv = torch.from_numpy(x_train), torch.from_numpy(x_val)
        gen = torch.Generator().manual_seed(config.seed)
        best = BestWeights(min_delta=0.0)  # every epoch runs; the best one's weights are kept
        train_losses = []
        for epoch in range(1, config.epochs + 1):
            model.train()
            total = 0.0
            for batch in torch.randperm(len(xt), generator=gen).split(config.batch_size):
                loss = model(xt[batch]).loss
                optimizer_step(loss, opt)
                total += float(loss.detach()) * len(batch)
            train_losses.append(total / len(xt))
            model.eval()
            with torch.inference_mode():
                val_loss = float(model(xv).loss)
            best.update(val_loss, model)
            if progress:
                progress(epoch, config.epochs, val_loss)
        best.restore(model)
        det = cls(model, scaler, 0.0, config, worker_scalers=worker_scalers)
        val_err, _ = det.window_errors(x_val)
        det.threshold = float(np.quantile(val_err, config.threshold_quantile))
        det.report = TrainReport(len(x_train), len(x_val), best.best_check, train_losses[best.best_check - 1],
                                 best.best, det.threshold)
        return det

    def state(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "threshold": self.threshold, "scaler": self.scaler.to_dict(),
                "worker_scalers": {w: s.to_dict() for w, s in self.worker_scalers.items()},
                "fields": list(FIELDS), "report": asdict(self.report) if self.report else None}

    def save_files(self, folder: Path) -> list[str]:
        """``config.json`` and ``model.safetensors`` via ``save_pretrained``."""
        self.model.save_pretrained(folder)
        return ["config.json", "model.safetensors"]

    @classmethod
    def from_state(cls, state: dict[str, Any], folder: Path) -> "AutoencoderDetector":
        from cortex.anomaly.model import MetricAutoencoder

        model = MetricAutoencoder.from_pretrained(folder, use_safetensors=True)
        report = TrainReport(**state["report"]) if state.get("report") else None
        return cls(model, FeatureScaler.from_dict(state["scaler"]), float(state["threshold"]),
                   AutoencoderConfig(**state["config"]), report,
                   {w: FeatureScaler.from_dict(d) for w, d in state.get("worker_scalers", {}).items()})
