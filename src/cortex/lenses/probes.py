"""Concept probes: small classifiers on a model's hidden states that return raw logits.

Both kinds first standardize their input with the layer's shared statistics (``input_mean``,
``input_std``: every probe of one model layer uses the same ones, so a bank applies them once), then an
optional LayerNorm:

- :class:`MLPClassifier`: [LayerNorm] → Linear(d, 128) → ReLU → Dropout → Linear(128, 64) → ReLU →
  Dropout → Linear(64, 1);
- :class:`LinearProbe`: [LayerNorm] → Linear(d, 1).

Each kind converts itself to and from a flat dict of tensors (:meth:`to_tensors` / :meth:`from_tensors`),
the layout lens packs store stacked along a leading concept axis and :class:`BatchedLensBank` scores.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from cortex.errors import ConfigError, PackError


class Probe(nn.Module):
    """Base of probe kinds: input standardization, optional LayerNorm, tensor (de)serialization."""

    kind: ClassVar[str]
    # per-probe tensors of this kind (besides ln_w/ln_b/has_ln), with shapes for a width-d input
    tensor_names: ClassVar[tuple[str, ...]]

    def __init__(self, input_dim: int, layer_norm: bool = False):
        super().__init__()
        if input_dim < 1:
            raise ConfigError(f"input_dim={input_dim} must be positive (the hidden width of the model layer).")
        self.input_dim = input_dim
        self.norm = nn.LayerNorm(input_dim) if layer_norm else None
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_std", torch.ones(input_dim))

    @property
    def has_layer_norm(self) -> bool:
        return self.norm is not None

    def set_normalizer(self, mean: torch.Tensor, std: torch.Tensor) -> "Probe":
        """Use the layer's activation statistics (``(d,)`` each) to standardize inputs."""
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)
        return self

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std
        return self.norm(x) if self.norm is not None else x

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x))

    def _ln_tensors(self) -> dict[str, torch.Tensor]:
        d = self.input_dim
        if self.norm is None:
            return {"ln_w": torch.ones(d), "ln_b": torch.zeros(d), "has_ln": torch.tensor(0, dtype=torch.uint8)}
        return {"ln_w": self.norm.weight.detach().clone(), "ln_b": self.norm.bias.detach().clone(),
                "has_ln": torch.tensor(1, dtype=torch.uint8)}

    def _load_ln(self, t: dict[str, torch.Tensor]) -> None:
        if self.norm is not None:
            self.norm.weight.data.copy_(t["ln_w"])
            self.norm.bias.data.copy_(t["ln_b"])


class MLPClassifier(Probe):
    """[LayerNorm] → 128 → ReLU → Dropout → 64 → ReLU → Dropout → 1; ``forward(x (..., d)) → (...)`` logits."""

    kind = "mlp"
    tensor_names = ("W1", "b1", "W2", "b2", "W3", "b3")

    def __init__(self, input_dim: int, hidden: int = 128, layer_norm: bool = False, dropout: float = 0.1):
        super().__init__(input_dim, layer_norm)
        if hidden < 2:
            raise ConfigError(f"hidden={hidden} must be at least 2 (the second layer is hidden // 2 wide).")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout={dropout} must be in [0, 1).")
        self.hidden = hidden
        self.fc1 = nn.Linear(input_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden // 2)
        self.fc3 = nn.Linear(hidden // 2, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.fc1(self.prepare(x))))
        h = self.drop(torch.relu(self.fc2(h)))
        return self.fc3(h).squeeze(-1)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """``W1 (128, d)``, ``b1 (128,)``, ``W2 (64, 128)``, ``b2 (64,)``, ``W3 (1, 64)``, ``b3 (1,)``, LayerNorm."""
        t = {"W1": self.fc1.weight, "b1": self.fc1.bias, "W2": self.fc2.weight, "b2": self.fc2.bias,
             "W3": self.fc3.weight, "b3": self.fc3.bias}
        return {**{k: v.detach().clone() for k, v in t.items()}, **self._ln_tensors()}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], mean: torch.Tensor, std: torch.Tensor) -> "MLPClassifier":
        hidden, d = t["W1"].shape
        probe = cls(d, hidden=hidden, layer_norm=bool(int(t["has_ln"])))
        for name, layer in (("1", probe.fc1), ("2", probe.fc2), ("3", probe.fc3)):
            w, b = t["W" + name], t["b" + name]
            if w.shape != layer.weight.shape or b.shape != layer.bias.shape:
                raise PackError(
                    f"MLP probe tensor W{name} has shape {tuple(w.shape)}, expected {tuple(layer.weight.shape)}: "
                    "the probe file does not match the layer width. Retrain the lens pack for this model."
                )
            layer.weight.data.copy_(w)
            layer.bias.data.copy_(b)
        probe._load_ln(t)
        return probe.set_normalizer(mean, std).eval()


class LinearProbe(Probe):
    """[LayerNorm] → Linear(d, 1); ``forward(x (..., d)) → (...)`` logits."""

    kind = "linear"
    tensor_names = ("W", "b")

    def __init__(self, input_dim: int, layer_norm: bool = False):
        super().__init__(input_dim, layer_norm)
        self.linear = nn.Linear(input_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.prepare(x)).squeeze(-1)

    @property
    def direction(self) -> torch.Tensor:
        """The unit weight vector ``(d,)`` in standardized input space (a concept direction for steering)."""
        w = self.linear.weight.detach()[0]
        return w / w.norm()

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """``W (d,)``, ``b ()``, LayerNorm."""
        return {"W": self.linear.weight.detach()[0].clone(), "b": self.linear.bias.detach()[0].clone(),
                **self._ln_tensors()}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], mean: torch.Tensor, std: torch.Tensor) -> "LinearProbe":
        d = t["W"].shape[-1]
        probe = cls(d, layer_norm=bool(int(t["has_ln"])))
        probe.linear.weight.data.copy_(t["W"].reshape(1, d))
        probe.linear.bias.data.copy_(t["b"].reshape(1))
        probe._load_ln(t)
        return probe.set_normalizer(mean, std).eval()


PROBE_KINDS: dict[str, type[Probe]] = {MLPClassifier.kind: MLPClassifier, LinearProbe.kind: LinearProbe}


def probe_class(kind: str) -> type[Probe]:
    """The probe class registered as ``kind`` (``mlp`` or ``linear``)."""
    if kind not in PROBE_KINDS:
        raise ConfigError.bad_choice("probe", kind, PROBE_KINDS)
    return PROBE_KINDS[kind]


def stack_tensors(per_probe: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack per-probe tensor dicts along a new leading concept axis ``(N, ...)``."""
    return {k: torch.stack([t[k] for t in per_probe]) for k in per_probe[0]}


def unstack_tensors(stacked: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Row ``i`` of a stacked tensor dict."""
    return {k: v[i] for k, v in stacked.items()}
