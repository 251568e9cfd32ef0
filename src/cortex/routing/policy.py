"""The decision policy: from the model's predictions to one master, with fallbacks.

For each master ``m`` the expected utility is::

    U_m = p_m * s_m ** success_weight  -  time_cost * E[minutes_m]  -  token_cost * E[tokens_m] / 1000

where ``p_m`` is the (calibrated, optionally kNN-blended) probability that ``m`` is the right master
and ``s_m`` its predicted success probability (1 when the router never saw success outcomes; a
cost term is 0 when its outcome was never seen). The best-utility master is taken when its
probability reaches ``confidence_threshold``; otherwise the YAML rules decide (first match), then a
confident kNN vote, then the default master. Every step is reported in :class:`Decision`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cortex.errors import ConfigError
from cortex.routing.rules import RuleSet

PATHS = ("model", "rules", "knn", "default")


@dataclass
class PolicyConfig:
    """Run settings of the decision policy (saved beside a router; overridable when serving).

    Attributes:
        confidence_threshold: below this probability of the chosen master, fall back to rules (1: always).
        success_weight: exponent of the success probability in the utility (1: expected success;
            0: ignore predicted success and pick by routing probability and costs).
        time_cost_per_minute: utility lost per expected minute of work.
        token_cost_per_1k: utility lost per 1,000 expected tokens.
        knn_weight: weight ``w`` of the kNN vote in ``p = (1 - w) p_model + w p_knn``; 0 disables it.
        knn_k: neighbours in the vote. knn_min_similarity: weaker neighbours do not vote.
        knn_fallback: when the model is unsure and no rule fires, accept a kNN vote whose top share
            reaches ``confidence_threshold``.
        default_master: the last resort (default: the rules' ``default_master``, else the first master).
    """

    confidence_threshold: float = 0.4
    success_weight: float = 1.0
    time_cost_per_minute: float = 0.0
    token_cost_per_1k: float = 0.0
    knn_weight: float = 0.0
    knn_k: int = 10
    knn_min_similarity: float = 0.3
    knn_fallback: bool = True
    default_master: str | None = None

    def __post_init__(self) -> None:
        problems = []
        for name in ("confidence_threshold", "knn_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                problems.append(f"policy.{name}={v!r} must be a number in [0, 1]")
        for name in ("time_cost_per_minute", "token_cost_per_1k", "success_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                problems.append(f"policy.{name}={v!r} must be a finite number >= 0")
        if isinstance(self.knn_k, bool) or not isinstance(self.knn_k, int) or self.knn_k < 1:
            problems.append(f"policy.knn_k={self.knn_k!r} must be an integer >= 1")
        if not isinstance(self.knn_min_similarity, (int, float)) or not -1 <= self.knn_min_similarity <= 1:
            problems.append(f"policy.knn_min_similarity={self.knn_min_similarity!r} must be in [-1, 1]")
        if problems:
            raise ConfigError("; ".join(problems) + ".")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PolicyConfig:
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        for key in data:
            if key not in known:
                raise ConfigError.unknown_key(key, known, "policy")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prediction:
    """The model's view of one task, per master (length ``C`` arrays, masters in router order).

    Attributes:
        probs: calibrated probability that each master is the right one (sums to 1).
        success: predicted success probability per master, or ``None`` if never trained.
        minutes: expected completion minutes per master (log-normal mean), or ``None``.
        tokens: expected tokens per master, or ``None``.
    """

    probs: np.ndarray
    success: np.ndarray | None = None
    minutes: np.ndarray | None = None
    tokens: np.ndarray | None = None


@dataclass
class Decision:
    """Where one task goes, and why.

    Attributes:
        master: the chosen master. path: which step decided (``model|rules|knn|default``).
        confidence: the model's (blended) probability of ``master``, or the rule's confidence on the
            ``rules`` path, or the kNN share on the ``knn`` path (0 when nothing supports it).
        probabilities: master → probability the router would use (model, blended with kNN if on).
        success_probability, expected_minutes, expected_tokens: the model's predictions for
            ``master`` (``None`` when the model did not run or never saw that outcome).
        utility: master → expected utility (``None`` when the model did not run).
        rule: name of the rule that fired on the ``rules`` path.
        latency_ms: wall time of the whole decision. router: the router's name.
        error: why the model could not run, when it could not (the decision then comes from rules).
    """

    master: str
    path: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)
    success_probability: float | None = None
    expected_minutes: float | None = None
    expected_tokens: float | None = None
    utility: dict[str, float] | None = None
    rule: str | None = None
    latency_ms: float = 0.0
    router: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def utilities(pred: Prediction, probs: np.ndarray, cfg: PolicyConfig) -> np.ndarray:
    """``(C,)`` expected utility of each master (see the module docstring)."""
    s = pred.success if pred.success is not None else np.ones_like(probs)
    u = probs * s ** cfg.success_weight
    if pred.minutes is not None and cfg.time_cost_per_minute:
        u = u - cfg.time_cost_per_minute * pred.minutes
    if pred.tokens is not None and cfg.token_cost_per_1k:
        u = u - cfg.token_cost_per_1k * pred.tokens / 1000.0
    return u


def _opt(arr: np.ndarray | None, i: int) -> float | None:
    return None if arr is None else float(arr[i])


def decide(
    masters: list[str], pred: Prediction | None, text: str, cfg: PolicyConfig, rules: RuleSet,
    knn_probs: np.ndarray | None = None, knn_support: int = 0, error: str | None = None,
) -> Decision:
    """Apply the policy to one task.

    Args:
        masters: names, in the order of the prediction arrays (``C``).
        pred: the model's prediction, or ``None`` when it could not run (``error`` says why).
        text: the task text (for the rules).
        knn_probs: ``(C,)`` kNN vote, and ``knn_support`` how many neighbours voted.
    """
    use_knn = knn_probs is not None and knn_support > 0
    probs = None
    if pred is not None:
        probs = pred.probs
        if use_knn and cfg.knn_weight > 0:
            probs = (1.0 - cfg.knn_weight) * pred.probs + cfg.knn_weight * knn_probs
        util = utilities(pred, probs, cfg)
        best = int(np.argmax(util))
        base = Decision(
            master=masters[best], path="model", confidence=float(probs[best]),
            probabilities={m: float(p) for m, p in zip(masters, probs)},
            success_probability=_opt(pred.success, best), expected_minutes=_opt(pred.minutes, best),
            expected_tokens=_opt(pred.tokens, best), utility={m: float(u) for m, u in zip(masters, util)},
        )
        # a threshold of 1 means "rules always": a saturated float probability must not slip through
        if base.confidence >= cfg.confidence_threshold and cfg.confidence_threshold < 1.0:
            if use_knn and cfg.knn_weight > 0 and best != int(np.argmax(utilities(pred, pred.probs, cfg))):
                base.path = "knn"  # the vote tipped the decision
            return base
    else:
        base = Decision(master=masters[0], path="default", confidence=0.0, error=error)

    def with_master(name: str, path: str, confidence: float, rule: str | None = None) -> Decision:
        i = masters.index(name)
        d = Decision(**{**base.to_dict(), "master": name, "path": path, "confidence": float(confidence), "rule": rule})
        if pred is not None:
            d.success_probability = _opt(pred.success, i)
            d.expected_minutes = _opt(pred.minutes, i)
            d.expected_tokens = _opt(pred.tokens, i)
        return d

    hit = rules.match(text)
    if hit is not None:
        return with_master(hit.master, "rules", hit.confidence, hit.rule)
    if use_knn and cfg.knn_fallback and float(knn_probs.max()) >= cfg.confidence_threshold:
        j = int(np.argmax(knn_probs))
        return with_master(masters[j], "knn", float(knn_probs[j]))
    default = cfg.default_master or rules.default_master or masters[0]
    return with_master(default, "default", float(probs[masters.index(default)]) if probs is not None else 0.0)
