"""Monitor: generate with per-token concept timelines, optional steering and bounds, and divergence flags.

:func:`run_monitor` stacks three kinds of hooks on the model's blocks, in this order on each block:
steering (:class:`~cortex.steering.hooks.SteeringHooks`, from ``steer`` requests), the autonomic controller
(:class:`~cortex.steering.autonomic.AutonomicController`, from ``bounds``), then lens reading
(:class:`~cortex.lenses.capture.ActivationCapture` feeding one :class:`~cortex.lenses.bank.BatchedLensBank`
per layer), so the timeline shows the state after every intervention. Generation is ``model.generate()``
with its KV cache: forward call ``k`` reads one new token and yields generated token ``k``; the timeline row of
generated token ``k`` is the lens reading of the newest position in call ``k`` (what the model held as it chose
that token). Each concept is read at its primary layer in the pack. The call goes through
:func:`cortex.generation.generate_ids`, the helper every cortex generation path shares.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from cortex.errors import ConfigError, InputError, PackError
from cortex.steering.autonomic import AutonomicController, Bound, ControllerSettings, build_rules
from cortex.steering.divergence import DivergenceSettings, TextConceptDetector, detect_divergence
from cortex.steering.hooks import (
    SCHEDULES,
    Additive,
    Contrastive,
    ProbeGradient,
    Removal,
    SteeringHooks,
    SteeringSpec,
)
from cortex.steering.vectors import ConceptVector, VectorSet, probe_direction

STEER_MODES = ("add", "contrast", "gradient", "remove")
_STEER_RE = re.compile(r"^\s*(?P<concept>[^=]+?)\s*=\s*(?P<value>[-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class SteerRequest:
    """Steer ``concept`` with ``strength`` (a fraction of the hidden norm for ``add``/``contrast``/``gradient``;
    the fraction of the coordinate removed for ``remove``)."""

    concept: str
    strength: float

    @classmethod
    def parse(cls, text: str) -> "SteerRequest":
        """``"Honesty=0.4"`` → ``SteerRequest("Honesty", 0.4)``."""
        m = _STEER_RE.match(text)
        if not m:
            raise ConfigError(f"Cannot read the steering request {text!r}. Write CONCEPT=STRENGTH, e.g. 'Honesty=0.4'.")
        try:
            return cls(m["concept"], float(m["value"]))
        except ValueError:
            raise ConfigError(f"Steering request {text!r}: {m['value']!r} is not a number.") from None


@dataclass
class MonitorSettings:
    """Generation, steering, control and divergence settings of one monitored run."""

    max_new_tokens: int = 48
    temperature: float = 0.0           # 0: greedy
    top_p: float = 0.95
    seed: int = 0
    top_k: int = 3
    steer_mode: str = "add"
    steer_layer: int | None = None     # None: each steered concept's primary layer
    schedule: str = "constant"
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    divergence: DivergenceSettings | None = field(default_factory=DivergenceSettings)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens} must be at least 1.")
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature} must be >= 0 (0 is greedy).")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p={self.top_p} must be in (0, 1].")
        if self.top_k < 1:
            raise ConfigError(f"top_k={self.top_k} must be at least 1.")
        if self.steer_mode not in STEER_MODES:
            raise ConfigError.bad_choice("steer_mode", self.steer_mode, STEER_MODES)
        if self.schedule not in SCHEDULES:
            raise ConfigError.bad_choice("schedule", self.schedule, SCHEDULES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MonitorResult:
    """Everything one monitored generation produced (JSON-ready via :meth:`to_dict`).

    ``scores`` is ``(T, C)``: generated token × concept (columns in ``concepts`` order), each concept's
    probability at its primary layer; ``prompt_scores`` the same over the prompt's tokens.
    """

    model: str
    lens_pack: str
    prompt: str
    text: str
    tokens: list[str]
    token_ids: list[int]
    concepts: list[str]
    layers: dict[str, int]
    scores: list[list[float]]
    top_k: list[list[tuple[str, float]]]
    prompt_tokens: list[str]
    prompt_scores: list[list[float]]
    steering: list[dict[str, Any]] = field(default_factory=list)
    bounds: list[str] = field(default_factory=list)
    interventions: list[dict[str, Any]] = field(default_factory=list)
    exceedance: dict[str, dict[str, float]] = field(default_factory=dict)
    divergence: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MonitorResult":
        d = dict(data)
        d["top_k"] = [[(c, float(s)) for c, s in row] for row in d.get("top_k", [])]
        return cls(**d)

    def score_matrix(self) -> torch.Tensor:
        """``scores`` as a ``(T, C)`` tensor."""
        return torch.tensor(self.scores, dtype=torch.float32).reshape(len(self.tokens), len(self.concepts))


# --------------------------------------------------------------------------------------- pack helpers
def pack_opposites(pack: Any, vectors: VectorSet | None = None, registry: Any = None) -> dict[str, list[str]]:
    """Each concept's opposites: those stored with the pack's vectors, then the concept pack's ``opposites``
    when the concept pack is in the registry."""
    out: dict[str, list[str]] = {k: list(v) for k, v in (vectors.opposites if vectors else {}).items()}
    cpack = _concept_pack(pack, registry)
    if cpack is not None:
        for c in cpack:
            if c.opposites:
                out.setdefault(c.term, list(c.opposites))
    return out


def pack_descriptions(pack: Any, registry: Any = None, examples: int = 3) -> dict[str, list[str]]:
    """Text descriptions of each pack concept for the text detector: definition and a few positive examples
    from the concept pack when it is in the registry, else the humanized concept name."""
    from cortex.lenses.concepts.examples import humanize

    cpack = _concept_pack(pack, registry)
    out = {}
    for c in pack.concepts():
        descs: list[str] = []
        if cpack is not None and c in cpack:
            concept = cpack.get(c)
            descs = [d for d in [concept.definition, *concept.positive_examples[:examples]] if d]
        out[c] = descs or [humanize(c)]
    return out


def _concept_pack(pack: Any, registry: Any) -> Any:
    from cortex.errors import CortexError
    from cortex.lenses.concepts import load_concept_pack

    name = (pack.info.get("concept_pack") or {}).get("name")
    if not name:
        return None
    try:
        return load_concept_pack(name, registry=registry)
    except CortexError:
        return None  # a pack used without its concept pack: no opposites or definitions beyond names


def concept_vector(pack: Any, vectors: VectorSet | None, concept: str, layer: int) -> ConceptVector:
    """The stored vector of ``concept`` at ``layer``, else the direction of its probe there."""
    v = vectors.get(concept, layer) if vectors else None
    if v is not None:
        return v
    lp = pack.layers.get(layer)
    if lp is None or concept not in lp.order:
        raise PackError(
            f"Concept {concept!r} has neither a stored vector nor a probe at layer {layer}; pick one of the pack's "
            f"layers {sorted(pack.layers)} or extract vectors for that layer."
        )
    return probe_direction(concept, layer, lp.probe(concept))


def build_steering(pack: Any, vectors: VectorSet | None, requests: Sequence[SteerRequest], *, mode: str = "add",
                   layer: int | None = None, schedule: str = "constant",
                   opposites: Mapping[str, Sequence[str]] | None = None) -> list[SteeringSpec]:
    """Steering specs for ``requests`` (see :data:`STEER_MODES`), each at ``layer`` or the concept's primary layer.

    ``add`` and ``contrast`` use the pack's stored concept vectors (probe directions where none is stored);
    ``remove`` uses the probe's own direction (origin: its input mean), so the lens there reads its bias;
    ``gradient`` follows the probe's gradient token by token.
    """
    if mode not in STEER_MODES:
        raise ConfigError.bad_choice("steer mode", mode, STEER_MODES)
    specs = []
    for r in requests:
        at = pack.primary(r.concept)[0] if layer is None else int(layer)
        if mode == "add":
            inter = Additive.from_vector(concept_vector(pack, vectors, r.concept, at))
        elif mode == "remove":
            # erase what the lens reads: its own direction, so the probe there drops to its null value
            lp = pack.layers.get(at)
            vec = (probe_direction(r.concept, at, lp.probe(r.concept)) if lp is not None and r.concept in lp.order
                   else concept_vector(pack, vectors, r.concept, at))
            inter = Removal.from_vector(vec)
        elif mode == "gradient":
            if at not in pack.layers or r.concept not in pack.layers[at].order:
                raise PackError(f"Gradient steering needs a probe of {r.concept!r} at layer {at}; the pack has none.")
            inter = ProbeGradient(pack.layers[at].probe(r.concept))
        else:  # contrast
            opp = [o for o in (opposites or {}).get(r.concept, [])]
            if not opp:
                raise ConfigError(
                    f"Contrastive steering of {r.concept!r} needs its opposite, and none is known. Add `opposites` to "
                    "the concept pack (HatCat's `opposite` relationship) or use --steer-mode add."
                )
            inter = Contrastive.from_vectors(concept_vector(pack, vectors, r.concept, at),
                                             concept_vector(pack, vectors, opp[0], at))
        specs.append(SteeringSpec(inter, layers=[at], strength=r.strength, schedule=schedule))
    return specs


# ---------------------------------------------------------------------------------------------- running
def _banks(pack: Any, concepts: Sequence[str]) -> dict[int, tuple[Any, list[str]]]:
    """One lens bank per primary layer, holding the concepts read there."""
    from cortex.lenses.bank import BatchedLensBank

    by_layer: dict[int, list[str]] = {}
    for c in concepts:
        by_layer.setdefault(pack.concepts()[c], []).append(c)
    out = {}
    for layer, names in by_layer.items():
        lp = pack.layers[layer]
        # the bank needs the MLP probes' hidden width up front; it is the first weight's row count
        width = int(lp.tensors["W1"].shape[1]) if "W1" in lp.tensors else 128
        bank = BatchedLensBank(pack.hidden_size, input_mean=lp.input_mean, input_std=lp.input_std, hidden=width)
        bank.add_tensors(lp.kind, names, lp.select(names))
        out[layer] = (bank, bank.names)
    return out


def run_monitor(
    loaded: Any,
    pack: Any,
    prompt: str,
    *,
    steer: Sequence[SteerRequest] = (),
    bounds: Sequence[Bound] = (),
    settings: MonitorSettings | None = None,
    vectors: VectorSet | None = None,
    opposites: Mapping[str, Sequence[str]] | None = None,
    detector: TextConceptDetector | None = None,
    check_model: bool = True,
) -> MonitorResult:
    """Generate a continuation of ``prompt`` with ``loaded`` (a :class:`~cortex.hub.loading.LoadedModel`)
    while reading every concept of lens ``pack``; see the module docstring. ``detector`` (a text concept
    detector) enables divergence detection when ``settings.divergence`` is set."""
    cfg = settings or MonitorSettings()
    start = time.perf_counter()
    if check_model:
        pack.check_model(loaded)
    tok = loaded.tokenizer
    concepts = sorted(pack.concepts())
    primary = pack.concepts()
    opposites = dict(opposites if opposites is not None else (vectors.opposites if vectors else {}))
    specs = build_steering(pack, vectors, steer, mode=cfg.steer_mode, layer=cfg.steer_layer,
                           schedule=cfg.schedule, opposites=opposites)
    rules = build_rules(pack, vectors, bounds, opposites)
    banks = _banks(pack, concepts)

    ids, new_ids, steps, prompt_logits, controller = _generate_and_read(loaded, prompt, specs, rules, banks, cfg)
    scores, pscores = _scores(banks, concepts, steps, prompt_logits, len(new_ids), ids.shape[1])
    tokens = [tok.decode([t]) for t in new_ids]
    prompt_tokens = [tok.decode([t]) for t in ids[0].tolist()]
    k = min(cfg.top_k, len(concepts))
    top = [[(concepts[int(j)], round(float(row[j]), 4)) for j in row.argsort(descending=True)[:k]] for row in scores]

    divergence = None
    if cfg.divergence is not None and detector is not None and new_ids:
        divergence = detect_divergence(tokens, scores, concepts, detector, cfg.divergence).to_dict()
    exceed = {}
    for rule in rules:
        c = rule.bound.concept
        exceed[str(rule.bound)] = {"before": controller.exceedance(c, after=False),
                                   "after": controller.exceedance(c, after=True)}
    name = loaded.entry.name if getattr(loaded, "entry", None) is not None else str(loaded.path)
    return MonitorResult(
        model=name, lens_pack=str(pack.info.get("name") or pack.folder), prompt=prompt,
        text=tok.decode(new_ids, skip_special_tokens=True), tokens=tokens, token_ids=new_ids, concepts=concepts,
        layers={c: int(primary[c]) for c in concepts},
        scores=[[round(float(x), 5) for x in row] for row in scores], top_k=top,
        prompt_tokens=prompt_tokens, prompt_scores=[[round(float(x), 5) for x in row] for row in pscores],
        steering=[{"concept": r.concept, "strength": r.strength, "mode": cfg.steer_mode, "layer": s.layers[0],
                   "schedule": cfg.schedule} for r, s in zip(steer, specs)],
        bounds=[str(b) for b in bounds], interventions=[i.to_dict() for i in controller.interventions],
        exceedance=exceed, divergence=divergence, settings=cfg.to_dict(), seconds=round(time.perf_counter() - start, 3),
    )


def _generate_and_read(loaded: Any, prompt: str, specs: list, rules: list, banks: dict, cfg: MonitorSettings):
    """Stage 1: generate under the steering hooks and the autonomic controller while the lens banks read
    every block output. Returns the prompt ids ``(1, P)``, the new token ids, per-layer step logits,
    per-layer prompt logits ``(P, n)`` and the controller (its interventions and exceedance)."""
    from cortex.generation import encode_prompts, generate_ids, pad_token_id
    from cortex.lenses.capture import ActivationCapture

    model, tok, blocks = loaded.model, loaded.tokenizer, loaded.layers()
    ids, mask = encode_prompts(tok, prompt, next(model.parameters()).device)
    steps: dict[int, list[torch.Tensor]] = {layer: [] for layer in banks}
    prompt_logits: dict[int, torch.Tensor] = {}

    def read(layer: int, hidden: torch.Tensor) -> None:
        bank = banks[layer][0]
        if layer not in prompt_logits:
            prompt_logits[layer] = bank.logits(hidden[0].float()).cpu()          # (P, n)
        steps[layer].append(bank.logits(hidden[0, -1].float()).cpu())            # (n,)

    controller = AutonomicController(blocks, rules, cfg.controller)
    with SteeringHooks(blocks, specs), controller, \
            ActivationCapture(blocks, sorted(banks), store=False, on_output=read):
        out = generate_ids(model, ids, mask, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                           top_p=cfg.top_p, seed=cfg.seed, pad_token_id=pad_token_id(tok))
    new_ids = out[0].tolist()
    if any(len(v) < len(new_ids) for v in steps.values()):
        raise InputError(
            f"The model made {len(new_ids)} tokens but its blocks were called fewer times; generation must run "
            "the layers once per token (KV cache on, no speculative decoding)."
        )
    return ids, new_ids, steps, prompt_logits, controller


def _scores(banks: dict, concepts: list[str], steps: dict, prompt_logits: dict, n: int, n_prompt: int):
    """Stage 2: concept probabilities ``(n, C)`` of the new tokens and ``(P, C)`` of the prompt tokens,
    each concept read at its own layer."""
    col = {c: i for i, c in enumerate(concepts)}
    scores = torch.zeros(n, len(concepts))
    pscores = torch.zeros(n_prompt, len(concepts))
    for layer, (_, names) in banks.items():
        idx = [col[c] for c in names]
        scores[:, idx] = torch.sigmoid(torch.stack(steps[layer][:n]))
        pscores[:, idx] = torch.sigmoid(prompt_logits[layer])
    return scores, pscores
