"""Autonomic steering: keep concepts within bounds while a model generates, correcting only when needed.

A :class:`Bound` says e.g. ``Deception <= 0.3`` on the concept's calibrated score (its probe's probability
``σ(z)``; probes are trained on balanced classes, so 0.5 is "as likely as not"). At every forward call the
:class:`AutonomicController` scores the newest token's hidden state at the concept's layer. The excess over
the bound feeds a leaky integrator,

    u_t = clip(decay · u_{t-1} + gain · max(0, score_t - bound), 0, max_strength)

and while ``u_t`` is above ``min_strength`` the token is moved by ``u_t·‖h‖`` along the correction direction:
toward the concept's configured opposite and away from the concept (the orthogonalized contrast of their
vectors), or straight away from the concept when it has no opposite. Every intervention is logged with the
score before and after; every reading is kept, so the fraction of tokens above bound can be measured.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from cortex.errors import ConfigError, InputError
from cortex.lenses.capture import LayerHooks, hidden_from_output, replace_hidden
from cortex.steering.vectors import ConceptVector, VectorSet, contrast_direction, probe_direction

_BOUND_RE = re.compile(r"^\s*(?P<concept>[^<>=]+?)\s*(?P<op><=|>=)\s*(?P<value>[-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Bound:
    """``concept <= value`` (``op="<="``) or ``concept >= value`` on the concept's score in ``[0, 1]``."""

    concept: str
    op: str
    value: float

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise ConfigError.bad_choice("bound operator", self.op, ("<=", ">="))
        if not 0.0 <= self.value <= 1.0:
            raise ConfigError(
                f"Bound {self.concept}{self.op}{self.value}: the value is a probability and must be in [0, 1]."
            )

    @classmethod
    def parse(cls, text: str) -> "Bound":
        """``"Deception<=0.3"`` → ``Bound("Deception", "<=", 0.3)``."""
        m = _BOUND_RE.match(text)
        if not m:
            raise ConfigError(
                f"Cannot read the bound {text!r}. Write CONCEPT<=X or CONCEPT>=X with X in [0, 1], e.g. "
                "'Deception<=0.3'."
            )
        try:
            value = float(m["value"])
        except ValueError:
            raise ConfigError(f"Bound {text!r}: {m['value']!r} is not a number.") from None
        return cls(m["concept"], m["op"], value)

    def excess(self, score: torch.Tensor) -> torch.Tensor:
        """How far ``score`` is outside the bound (0 inside)."""
        return (score - self.value).clamp_min(0) if self.op == "<=" else (self.value - score).clamp_min(0)

    def violated(self, score: torch.Tensor) -> torch.Tensor:
        return score > self.value if self.op == "<=" else score < self.value

    def __str__(self) -> str:
        return f"{self.concept}{self.op}{self.value:g}"


@dataclass
class ControllerSettings:
    """Gain and decay of the leaky-integral controller, and the range of its strength (fraction of ‖h‖)."""

    gain: float = 1.0
    decay: float = 0.5
    # a correction of half the hidden norm already flips the demo model's kind; more only costs fluency
    max_strength: float = 0.5
    min_strength: float = 1e-3

    def __post_init__(self) -> None:
        if not self.gain > 0:
            raise ConfigError(f"gain={self.gain} must be positive (strength added per unit of excess score).")
        if not 0 <= self.decay < 1:
            raise ConfigError(f"decay={self.decay} must be in [0, 1) (fraction of last token's strength kept).")
        if not self.max_strength > 0:
            raise ConfigError(f"max_strength={self.max_strength} must be positive.")
        if not 0 <= self.min_strength < self.max_strength:
            raise ConfigError(f"min_strength={self.min_strength} must be in [0, max_strength).")


@dataclass
class BoundRule:
    """What the controller needs for one bound: the layer, the probe scoring it, the correction direction."""

    bound: Bound
    layer: int
    probe: nn.Module
    direction: torch.Tensor          # (d,) unit: where corrections push
    toward: str | None = None        # the opposite concept corrections move toward (None: just away)


@dataclass
class InterventionRecord:
    """One correction: at forward call ``step`` (call 0 reads the prompt and yields generated token 0)."""

    step: int
    row: int
    position: int
    concept: str
    toward: str | None
    layer: int
    bound: str
    score_before: float
    score_after: float
    strength: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Reading:
    """The bounded concept's score at one forward call's newest token, before and after any correction."""

    step: int
    row: int
    concept: str
    score_before: float
    score_after: float
    violated_after: bool


def correction_direction(bound: Bound, concept: ConceptVector, opposite: ConceptVector | None) -> torch.Tensor:
    """Unit direction that brings ``concept`` back inside ``bound``: for ``<=`` toward the opposite and away
    from the concept (or just away without an opposite); for ``>=`` the reverse."""
    if opposite is None:
        return -concept.direction if bound.op == "<=" else concept.direction.clone()
    if bound.op == "<=":
        return contrast_direction(opposite.direction, concept.direction)
    return contrast_direction(concept.direction, opposite.direction)


class AutonomicController(LayerHooks):
    """Hooks that hold concepts within bounds during generation (see the module docstring).

    >>> rules = build_rules(pack, vectors, [Bound.parse("Deception<=0.3")], opposites)
    >>> with AutonomicController(loaded.layers(), rules, ControllerSettings(gain=2, decay=0.5)) as ctl:
    ...     model.generate(**enc, max_new_tokens=40)
    >>> ctl.interventions        # list of InterventionRecord

    Only the newest position of each forward call is scored and corrected (the token being produced), so
    with a KV cache every generated token is controlled once. Hooks are removed on exit, error or not.
    """

    def __init__(self, blocks: Sequence[nn.Module], rules: Sequence[BoundRule],
                 settings: ControllerSettings | None = None):
        self.blocks = list(blocks)
        self.rules = list(rules)
        self.settings = settings or ControllerSettings()
        n = len(self.blocks)
        for r in self.rules:
            if not 0 <= r.layer < n:
                raise InputError(f"Bound {r.bound} is on layer {r.layer}; the model has blocks 0..{n - 1}.")
        self.by_layer: dict[int, list[int]] = {}
        for i, r in enumerate(self.rules):
            self.by_layer.setdefault(r.layer, []).append(i)
        self.interventions: list[InterventionRecord] = []
        self.readings: list[Reading] = []
        self._state: dict[int, torch.Tensor] = {}
        self._steps: dict[int, int] = {}
        self._handles: list[Any] = []

    def reset(self) -> None:
        """Forget the controller state and logs (for a new generation with the same hooks)."""
        self.interventions.clear()
        self.readings.clear()
        self._state.clear()
        self._steps.clear()

    def _score(self, probe: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(probe(h).float())

    def _hook(self, layer: int) -> Any:
        rule_ids = self.by_layer[layer]
        cfg = self.settings

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            hidden = hidden_from_output(output)
            step = self._steps.get(layer, 0)
            self._steps[layer] = step + 1
            last = hidden[:, -1].float()                                          # (B, d)
            B = last.shape[0]
            changed = False
            for i in rule_ids:
                rule = self.rules[i]
                probe = rule.probe.to(last.device)
                before = self._score(probe, last)                                 # (B,)
                u = self._state.get(i)
                if u is None or u.shape[0] != B:
                    u = torch.zeros(B, device=last.device)
                u = (cfg.decay * u + cfg.gain * rule.bound.excess(before)).clamp(0, cfg.max_strength)
                self._state[i] = u
                act = u > cfg.min_strength
                if bool(act.any()):
                    d = rule.direction.to(last.device, last.dtype)
                    moved = last + (u * act).unsqueeze(-1) * last.norm(dim=-1, keepdim=True) * d
                    last = torch.where(act.unsqueeze(-1), moved, last)
                    changed = True
                after = self._score(probe, last)
                for b in range(B):
                    self.readings.append(Reading(step, b, rule.bound.concept, float(before[b]), float(after[b]),
                                                 bool(rule.bound.violated(after[b]))))
                    if bool(act[b]):
                        self.interventions.append(InterventionRecord(
                            step=step, row=b, position=hidden.shape[1] - 1, concept=rule.bound.concept,
                            toward=rule.toward, layer=layer, bound=str(rule.bound), score_before=float(before[b]),
                            score_after=float(after[b]), strength=float(u[b])))
            if not changed:
                return None
            new = torch.cat([hidden[:, :-1], last.to(hidden.dtype).unsqueeze(1)], dim=1)
            return replace_hidden(output, new)

        return hook

    def _hooked_layers(self) -> Sequence[int]:
        return sorted(self.by_layer)

    def exceedance(self, concept: str | None = None, after: bool = True) -> float:
        """Fraction of readings (of ``concept``, or all) outside their bound, after (or before) correction."""
        rows = [r for r in self.readings if concept is None or r.concept == concept]
        if not rows:
            return float("nan")
        if after:
            return sum(r.violated_after for r in rows) / len(rows)
        bounds = {r.bound.concept: r.bound for r in self.rules}
        return sum(bool(bounds[r.concept].violated(torch.tensor(r.score_before))) for r in rows) / len(rows)


def build_rules(pack: Any, vectors: VectorSet | None, bounds: Sequence[Bound],
                opposites: Mapping[str, Sequence[str]] | None = None, layer: int | None = None) -> list[BoundRule]:
    """Rules for ``bounds`` from a lens pack (probe at the concept's primary layer, or ``layer``), its stored
    concept vectors (a probe direction when none is stored) and each concept's opposites (first one that has
    a probe or vector at that layer)."""
    vectors = vectors or VectorSet()
    opp = {k: list(v) for k, v in (opposites or vectors.opposites).items()}
    rules = []
    for b in bounds:
        primary, probe = pack.primary(b.concept)
        at = primary if layer is None else int(layer)
        if at != primary:
            if at not in pack.layers:
                raise InputError(f"Lens pack has no layer {at}; it has {sorted(pack.layers)}.")
            probe = pack.layers[at].probe(b.concept)

        def vec(concept: str) -> ConceptVector | None:
            v = vectors.get(concept, at)
            if v is not None:
                return v
            lp = pack.layers.get(at)
            if lp is not None and concept in lp.order:
                return probe_direction(concept, at, lp.probe(concept))
            return None

        own = vec(b.concept)
        toward = next((o for o in opp.get(b.concept, []) if vec(o) is not None), None)
        direction = correction_direction(b, own, vec(toward) if toward else None)
        rules.append(BoundRule(bound=b, layer=at, probe=probe, direction=direction, toward=toward))
    return rules
