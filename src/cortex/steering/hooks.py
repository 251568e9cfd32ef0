"""Steering hooks: change a causal LM's hidden states along concept directions while it runs.

Interventions (one class per kind, chosen by name through :data:`INTERVENTIONS`), each acting on hidden
states ``h (B, T, d)`` with a per-row strength ``s (B, 1, 1)``:

- ``add``:       ``h + s·‖h‖·v``                       (scaled by each token's norm, so a strength is a
                                                         fraction of the residual stream whatever the model)
- ``remove``:    ``h - s·((h - o)·v)·v``                (``s = 1`` puts every token on the concept's neutral
                                                         point ``o``: a linear probe along ``v`` reads its bias)
- ``clamp``:     ``h + s·(clip((h - o)·v, lo, hi) - (h - o)·v)·v``
- ``contrast``:  ``add`` along :func:`~cortex.steering.vectors.contrast_direction` (toward A, away from B)
- ``gradient``:  ``h + s·‖h‖·∇ₕz/‖∇ₕz‖``               (``z``: a probe's logit at each token; activation
                                                         dependent; ``s > 0`` raises the probe, ``s < 0`` lowers it)

:class:`SteeringHooks` registers one forward hook per steered block and removes every hook on exit, error
or not. Hooks fire on every forward call, so during ``generate()`` with a KV cache the prompt call and each
one-token call are steered alike. A per-layer schedule scales the strength by depth, and a strength or a
vector may differ per batch row (per-prompt steering). Rows whose strength is 0 keep the block's output bit
for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from cortex.errors import ConfigError, InputError
from cortex.lenses.capture import LayerHooks, hidden_from_output, replace_hidden
from cortex.steering.vectors import ConceptVector, contrast_direction

POSITIONS = ("all", "last")


def _rows(v: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """``(d,)`` or ``(B, d)`` → ``(B or 1, 1, d)``, refusing a per-row tensor of the wrong batch size."""
    if v.dim() == 1:
        return v.view(1, 1, -1)
    if v.dim() == 2 and v.shape[0] in (1, batch):
        return v.unsqueeze(1)
    raise InputError(
        f"{what} has shape {tuple(v.shape)} but the batch has {batch} rows; pass one vector (d,) for all rows "
        f"or one per row ({batch}, d)."
    )


def _unit(v: torch.Tensor) -> torch.Tensor:
    v = v.detach().float()
    n = v.norm(dim=-1, keepdim=True)
    if bool((n == 0).any()) or not bool(torch.isfinite(v).all()):
        raise InputError("A steering direction is zero or not finite; extract the concept vector again.")
    return v / n


class Intervention:
    """Base of intervention kinds: ``steer(h (B, T, d) float32, s (B, 1, 1)) → (B, T, d)``."""

    kind: ClassVar[str]
    dim: int

    def steer(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define steer()")

    def _on(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return t.to(device=h.device, dtype=h.dtype)

    def check_width(self, h: torch.Tensor) -> None:
        if h.shape[-1] != self.dim:
            raise InputError(
                f"A {self.kind} intervention with a {self.dim}-wide vector was hooked on a {h.shape[-1]}-wide layer; "
                "use concept vectors extracted from this model and layer."
            )


class Additive(Intervention):
    """``h + s·‖h‖·v``; ``direction`` is ``(d,)`` or per row ``(B, d)`` (normalized here)."""

    kind = "add"

    def __init__(self, direction: torch.Tensor):
        self.direction = _unit(direction)
        self.dim = self.direction.shape[-1]

    @classmethod
    def from_vector(cls, vector: ConceptVector) -> "Additive":
        return cls(vector.direction)

    def steer(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        v = _rows(self._on(self.direction, h), h.shape[0], "The steering direction")
        return h + s * h.norm(dim=-1, keepdim=True) * v


class Removal(Intervention):
    """``h - s·((h - o)·v)·v``: removes the concept coordinate measured from ``origin`` (``s = 1``: fully)."""

    kind = "remove"

    def __init__(self, direction: torch.Tensor, origin: torch.Tensor | None = None):
        self.direction = _unit(direction)
        self.dim = self.direction.shape[-1]
        self.origin = torch.zeros_like(self.direction) if origin is None else origin.detach().float()

    @classmethod
    def from_vector(cls, vector: ConceptVector) -> "Removal":
        return cls(vector.direction, vector.origin)

    def coordinate(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = _rows(self._on(self.direction, h), h.shape[0], "The concept direction")
        o = _rows(self._on(self.origin, h), h.shape[0], "The concept origin")
        return ((h - o) * v).sum(-1, keepdim=True), v

    def steer(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        p, v = self.coordinate(h)
        return h - s * p * v


class Clamp(Removal):
    """Clip the concept coordinate ``(h - o)·v`` into ``[low, high]`` (either may be ``None``)."""

    kind = "clamp"

    def __init__(self, direction: torch.Tensor, origin: torch.Tensor | None = None, *, low: float | None = None,
                 high: float | None = None):
        super().__init__(direction, origin)
        if low is None and high is None:
            raise ConfigError("clamp needs low and/or high: the range the concept coordinate is kept in.")
        if low is not None and high is not None and low > high:
            raise ConfigError(f"clamp low={low} is above high={high}; pass low <= high.")
        self.low, self.high = low, high

    @classmethod
    def from_vector(cls, vector: ConceptVector, *, low: float | None = None, high: float | None = None) -> "Clamp":
        return cls(vector.direction, vector.origin, low=low, high=high)

    def steer(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        p, v = self.coordinate(h)
        return h + s * (p.clamp(min=self.low, max=self.high) - p) * v


class Contrastive(Additive):
    """Add along the orthogonalized contrast ``toward`` A and ``away`` from B (see ``contrast_direction``)."""

    kind = "contrast"

    def __init__(self, toward: torch.Tensor, away: torch.Tensor):
        super().__init__(contrast_direction(toward, away))

    @classmethod
    def from_vectors(cls, toward: ConceptVector, away: ConceptVector) -> "Contrastive":
        return cls(toward.direction, away.direction)


class ProbeGradient(Intervention):
    """Move each token along the gradient of a probe's logit: ``h + s·‖h‖·∇z/‖∇z‖``.

    The probe must be built outside ``torch.inference_mode`` (its weights are needed for the backward pass);
    the hook enables gradients locally, so it works inside ``generate()``.
    """

    kind = "gradient"

    def __init__(self, probe: nn.Module):
        self.probe = probe.eval()
        self.dim = int(getattr(probe, "input_dim"))

    def steer(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        probe = self.probe.to(h.device)
        with torch.inference_mode(False), torch.enable_grad():
            x = h.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(probe(x).sum(), x)
        g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return h + s * h.norm(dim=-1, keepdim=True) * g


INTERVENTIONS: dict[str, type[Intervention]] = {
    c.kind: c for c in (Additive, Removal, Clamp, Contrastive, ProbeGradient)
}


# ------------------------------------------------------------------------------------------ schedules
SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": lambda layer, n: 1.0,
    # deeper layers get less: their changes reach the logits with less chance to be integrated
    "sqrt_decay": lambda layer, n: math.sqrt(max(0.0, 1.0 - layer / n)),
    "linear_decay": lambda layer, n: max(0.0, 1.0 - layer / n),
}


def schedule_weights(schedule: str | Mapping[int, float], layers: Sequence[int], n_layers: int) -> dict[int, float]:
    """Strength multiplier of each steered layer: a named schedule (``constant``, ``sqrt_decay``,
    ``linear_decay``) over ``n_layers`` blocks, or an explicit ``{layer: weight}``."""
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ConfigError.bad_choice("schedule", schedule, SCHEDULES)
        return {int(l): SCHEDULES[schedule](int(l), n_layers) for l in layers}
    weights = {int(k): float(v) for k, v in schedule.items()}
    missing = [l for l in layers if int(l) not in weights]
    if missing:
        raise ConfigError(
            f"The strength schedule has no weight for layers {missing}; give a weight for every steered layer "
            f"({list(layers)}) or use a named schedule ({', '.join(SCHEDULES)})."
        )
    return {int(l): weights[int(l)] for l in layers}


@dataclass
class SteeringSpec:
    """One intervention on some layers: ``strength`` is a number or one per batch row ``(B,)``;
    ``schedule`` scales it per layer; ``positions`` is ``all`` (every token of every call) or ``last``
    (only the newest token of each call)."""

    intervention: Intervention
    layers: Sequence[int]
    strength: float | Sequence[float] | torch.Tensor = 1.0
    schedule: str | Mapping[int, float] = "constant"
    positions: str = "all"

    def __post_init__(self) -> None:
        if not isinstance(self.intervention, Intervention):
            raise ConfigError(
                f"intervention must be one of {', '.join(INTERVENTIONS)} (an Intervention object), got "
                f"{type(self.intervention).__name__}."
            )
        self.layers = [int(l) for l in self.layers]
        if not self.layers:
            raise ConfigError("A steering spec needs at least one layer index.")
        if self.positions not in POSITIONS:
            raise ConfigError.bad_choice("positions", self.positions, POSITIONS)
        self.strength = torch.as_tensor(self.strength, dtype=torch.float32).reshape(-1)
        if not bool(torch.isfinite(self.strength).all()):
            raise ConfigError(f"strength={self.strength.tolist()} must be finite.")

    def row_strength(self, batch: int, device: torch.device) -> torch.Tensor:
        s = self.strength
        if s.numel() not in (1, batch):
            raise InputError(
                f"{s.numel()} strengths were given for a batch of {batch} rows; pass one number or one per row."
            )
        return s.to(device).expand(batch) if s.numel() == 1 else s.to(device)


class SteeringHooks(LayerHooks):
    """Context manager that steers ``blocks`` (a model's decoder layers) with ``specs``.

    >>> spec = SteeringSpec(Additive(vec.direction), layers=[6], strength=0.2)
    >>> with SteeringHooks(loaded.layers(), [spec]):
    ...     model.generate(**enc, max_new_tokens=40)

    Specs on one layer are applied in the order given. ``set_strength(i, value)`` changes spec ``i`` between
    (or during) forward calls. Every hook is removed on exit, also when the body raises.
    """

    def __init__(self, blocks: Sequence[nn.Module], specs: Sequence[SteeringSpec]):
        self.blocks = list(blocks)
        self.specs = list(specs)
        n = len(self.blocks)
        self.by_layer: dict[int, list[tuple[int, float]]] = {}
        for i, spec in enumerate(self.specs):
            bad = [l for l in spec.layers if not -n <= l < n]
            if bad:
                raise InputError(f"Steering layers {bad} are out of range for a model with {n} blocks; use 0..{n - 1}.")
            layers = [l % n for l in spec.layers]
            for layer, w in schedule_weights(spec.schedule, layers, n).items():
                self.by_layer.setdefault(layer, []).append((i, w))
        self._handles: list[Any] = []

    def set_strength(self, index: int, strength: float | Sequence[float] | torch.Tensor) -> None:
        """Replace the strength of spec ``index`` (a number or one per row)."""
        self.specs[index].strength = torch.as_tensor(strength, dtype=torch.float32).reshape(-1)

    def _hook(self, layer: int) -> Callable[..., Any]:
        entries = self.by_layer[layer]

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            hidden = hidden_from_output(output)
            B = hidden.shape[0]
            new = hidden.float()
            changed = False
            for i, weight in entries:
                spec = self.specs[i]
                s = spec.row_strength(B, hidden.device) * weight                       # (B,)
                active = s != 0
                if not bool(active.any()):
                    continue
                spec.intervention.check_width(new)
                steered = spec.intervention.steer(new, s.view(B, 1, 1))
                if spec.positions == "last":
                    steered = torch.cat([new[:, :-1], steered[:, -1:]], dim=1)
                new = torch.where(active.view(B, 1, 1), steered, new)
                changed = True
            if not changed:
                return None  # untouched output: zero strength is bit-identical to no hook
            return replace_hidden(output, new.to(hidden.dtype))

        return hook

    def _hooked_layers(self) -> Sequence[int]:
        return sorted(self.by_layer)
