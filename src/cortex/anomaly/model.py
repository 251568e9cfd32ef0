"""An MLP autoencoder over windows of scaled worker metrics, as a HuggingFace model.

A window of ``window`` rows × ``n_features`` metrics is flattened, squeezed through a
``latent_size`` bottleneck and reconstructed. Trained on normal history only, it reconstructs
normal windows well and anomalous ones badly; the per-window mean squared error is the anomaly score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from cortex._validate import Problems, check_positive
from cortex.errors import ModelInputError


class MetricAutoencoderConfig(PreTrainedConfig):
    """Shape of the metric autoencoder.

    Args:
        n_features: metrics per row (5: latency, error rate, tokens, duration, success).
        window: rows per window.
        hidden_size: width of the hidden layer on each side of the bottleneck.
        latent_size: bottleneck width (smaller than ``window * n_features`` or it learns the identity).
        output_low / output_high: per-feature range of the reconstruction (the range of normal
            history). An MLP extrapolates almost linearly, so unbounded it would reproduce a
            token count ten times any seen in training and call it normal; bounded, it cannot.
    """

    model_type = "cortex_metric_autoencoder"

    def __init__(self, n_features: int = 5, window: int = 8, hidden_size: int = 32, latent_size: int = 6,
                 output_low: list[float] | None = None, output_high: list[float] | None = None,
                 initializer_range: float = 0.1, **kwargs):
        problems = Problems()
        sizes_ok = all([check_positive(name, value, problems) for name, value in (
            ("n_features", n_features), ("window", window), ("hidden_size", hidden_size), ("latent_size", latent_size))])
        if sizes_ok and latent_size >= window * n_features:
            problems.add(
                f"latent_size={latent_size} must be smaller than window*n_features={window * n_features}, "
                "or the autoencoder can copy its input and every window looks normal.", "latent_size", latent_size,
            )
        problems.raise_if_any("MetricAutoencoderConfig")
        output_low = list(output_low) if output_low is not None else [-6.0] * n_features
        output_high = list(output_high) if output_high is not None else [6.0] * n_features
        if len(output_low) != n_features or len(output_high) != n_features or any(
                lo >= hi for lo, hi in zip(output_low, output_high)):
            problems.add(
                f"output_low={output_low} / output_high={output_high} must give one range per feature "
                f"({n_features}) with low < high."
            )
        problems.raise_if_any("MetricAutoencoderConfig")
        self.output_low = output_low
        self.output_high = output_high
        self.n_features = n_features
        self.window = window
        self.hidden_size = hidden_size
        self.latent_size = latent_size
        self.initializer_range = initializer_range
        super().__init__(**kwargs)


@dataclass
class AutoencoderOutput(ModelOutput):
    """``reconstruction`` ``(B, W*F)``; ``errors`` ``(B,)`` mean squared error per window;
    ``feature_errors`` ``(B, F)`` squared error per metric averaged over the window; ``loss`` mean of ``errors``."""

    loss: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    errors: torch.Tensor | None = None
    feature_errors: torch.Tensor | None = None


class MetricAutoencoder(PreTrainedModel):
    """Autoencoder ``(B, window * n_features) -> (B, window * n_features)``."""

    config_class = MetricAutoencoderConfig
    base_model_prefix = "autoencoder"
    main_input_name = "windows"

    def __init__(self, config: MetricAutoencoderConfig):
        super().__init__(config)
        d = config.window * config.n_features
        # SiLU, not GELU: on CPU torch's erf-based GELU costs milliseconds per call on tiny batches,
        # and live monitoring scores one window at a time.
        self.encoder = nn.Sequential(nn.Linear(d, config.hidden_size), nn.SiLU(),
                                     nn.Linear(config.hidden_size, config.latent_size))
        self.decoder = nn.Sequential(nn.Linear(config.latent_size, config.hidden_size), nn.SiLU(),
                                     nn.Linear(config.hidden_size, d))
        low = torch.tensor(config.output_low, dtype=torch.float32).repeat(config.window)  # (W*F,)
        high = torch.tensor(config.output_high, dtype=torch.float32).repeat(config.window)
        self.register_buffer("out_low", low)
        self.register_buffer("out_span", high - low)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)

    def forward(self, windows: torch.Tensor) -> AutoencoderOutput:
        """``windows`` ``(B, window * n_features)`` of scaled metrics → :class:`AutoencoderOutput`."""
        d = self.config.window * self.config.n_features
        if windows.ndim != 2 or windows.shape[1] != d:
            raise ModelInputError(
                f"windows must have shape (B, {d}) = (B, window*n_features); got {tuple(windows.shape)}."
            )
        recon = self.out_low + self.out_span * torch.sigmoid(self.decoder(self.encoder(windows)))
        sq = (recon - windows) ** 2  # (B, W*F)
        feature_errors = sq.view(-1, self.config.window, self.config.n_features).mean(1)  # (B, F)
        errors = sq.mean(1)
        return AutoencoderOutput(loss=errors.mean(), reconstruction=recon, errors=errors, feature_errors=feature_errors)
