"""What ``cortex route train`` and ``cortex route eval`` do, as library calls.

    from cortex.routing import DataFields, train_and_register, evaluate_registered
    out = train_and_register("train.jsonl", DataFields(text="prompt", label="master", topic="subject"))
    report = evaluate_registered("heldout.jsonl", DataFields(text="prompt", label="master"))

Every default lives once, in the settings dataclasses (:class:`DataFields`, :class:`RegisterSettings`,
:class:`~cortex.routing.training.TrainConfig`, :class:`~cortex.routing.policy.PolicyConfig`); the CLI
passes only what the user typed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cortex.errors import ConfigError
from cortex.hub.registry import Registry
from cortex.routing.data import IngestReport, load_any
from cortex.routing.masters import Master, load_masters
from cortex.routing.policy import PolicyConfig
from cortex.routing.training import Progress, TrainConfig


@dataclass
class DataFields:
    """Which fields of a labeled JSONL file hold what (routing logs have fixed names and ignore these).

    ``topic`` names a finer label owned by one master each (e.g. ``subject``); ``skip_bad`` skips
    invalid lines (listed in the report's ``problems``) instead of stopping.
    """

    text: str | None = None
    label: str | None = None
    success: str | None = None
    id: str | None = None
    minutes: str | None = None
    tokens: str | None = None
    time: str | None = None
    topic: str | None = None
    metrics: str | None = None
    skip_bad: bool = False

    def load(self, data: str | os.PathLike, masters: list[str] | None = None) -> IngestReport:
        """Read ``data`` (labeled JSONL, routing logs or parquet) and raise on bad lines unless ``skip_bad``."""
        report = load_any(
            data, text_field=self.text, label_field=self.label, success_field=self.success, id_field=self.id or "auto",
            minutes_field=self.minutes, tokens_field=self.tokens, time_field=self.time, topic_field=self.topic,
            masters=masters, metrics_path=self.metrics,
        )
        report.raise_if_bad(allow_bad=self.skip_bad)
        return report


@dataclass
class RegisterSettings:
    """Where and how a trained router is registered.

    Attributes:
        family: router family (aliases ``<family>:champion``...). name: registry name (default
            ``<family>-<UTC timestamp>``). champion: make it the champion (``None``: only if the family
            has none). knn_weight: blend weight of the kNN vote, or ``"auto"`` (most accurate on the
            validation split). masters / rules: YAML files (default: the labels seen; no rules).
        text_encoder: registry name or folder of the text encoder (default: the packaged MiniLM).
        model: other :class:`~cortex.routing.model.RouterConfig` fields (``ensemble_size``...).
    """

    family: str = "router"
    name: str | None = None
    champion: bool | None = None
    knn_weight: float | str = "auto"
    masters: str | None = None
    rules: str | None = None
    text_encoder: str | None = None
    model: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.knn_weight != "auto":
            try:
                w = float(self.knn_weight)
            except (TypeError, ValueError):
                w = -1.0
            if not 0.0 <= w <= 1.0:
                raise ConfigError(f"knn_weight={self.knn_weight!r} must be a number in [0, 1] or 'auto'.")
            self.knn_weight = w


def train_and_register(
    data: str | os.PathLike, fields: DataFields | None = None, settings: RegisterSettings | None = None,
    train: TrainConfig | None = None, policy: PolicyConfig | None = None, *, registry: Registry | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Read ``data``, train a router on it, register it (champion if asked or if the family has none).

    Returns a summary: ``router``, ``champion``, ``family``, the data counts, ``problems`` (skipped lines)
    and the ``validation`` figures.
    """
    from cortex.routing.loop import current, promote, register_router
    from cortex.routing.router import Router
    from cortex.routing.rules import RuleSet
    from cortex.routing.training import train_router

    fields, settings = fields or DataFields(), settings or RegisterSettings()
    train, policy = train or TrainConfig(), policy or PolicyConfig()
    masters = load_masters(settings.masters) if settings.masters else None
    report = fields.load(data, [m.name for m in masters] if masters else None)
    frame = report.frame
    masters = masters or [Master(n) for n in sorted(set(frame["label"]) | set(frame["outcome_master"]))]
    names = [m.name for m in masters]
    rules = RuleSet.load(settings.rules, names) if settings.rules else RuleSet()
    result = train_router(frame, masters, text_source=settings.text_encoder, model_kwargs=settings.model, train=train,
                          progress=progress)
    auto = settings.knn_weight == "auto"
    policy = PolicyConfig.from_dict({**policy.to_dict(), "knn_weight": result.knn_weight if auto else settings.knn_weight})
    router = Router(result.model, policy, rules, result.knn, meta={"knn_weight_from_validation": auto},
                    success=result.success)
    reg = registry or Registry()
    name = settings.name or f"{settings.family}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    entry = register_router(router, name=name, family=settings.family, registry=reg, train_frame=frame,
                            extra={"validation": result.validation, "train": train.to_dict(),
                                   "data": os.path.abspath(data)})
    made_champion = settings.champion if settings.champion is not None else current(reg, settings.family, "champion") is None
    if made_champion:
        promote(reg, settings.family, entry.name)
    return {"router": entry.name, "champion": bool(made_champion), "family": settings.family, **report.summary(),
            "problems": [str(p) for p in report.problems], "validation": result.validation}


def evaluate_registered(
    data: str | os.PathLike, fields: DataFields | None = None, *, router: str = "router:champion",
    policy: dict[str, Any] | None = None, rules: str | None = None, quantize: bool = True, latency_n: int = 200,
    baselines: bool = True, registry: Registry | None = None,
) -> dict[str, Any]:
    """Score a registered router on ``data``; with ``baselines`` also a kNN-10 MiniLM vote and TF-IDF +
    logistic regression, both fitted on the router's own training set and scored on the same records."""
    from cortex.routing.data import read_training_set
    from cortex.routing.evaluation import baseline_scores, evaluate_router
    from cortex.routing.router import DATA_FILE, Router

    reg = registry or Registry()
    r = Router.load(router, registry=reg, policy=policy, rules=rules, quantize=quantize)
    frame = (fields or DataFields()).load(data, r.masters).frame
    out = {"router": r.name, **evaluate_router(r, frame, latency_n=latency_n).to_dict()}
    folder = Path(router) if Path(router).is_dir() else reg.path(r.name)
    if baselines and (folder / DATA_FILE).is_file():
        out["baselines"] = baseline_scores(r, read_training_set(folder / DATA_FILE), frame)
    return out


__all__ = ["DataFields", "RegisterSettings", "evaluate_registered", "train_and_register"]
