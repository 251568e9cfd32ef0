"""The learning loop: register routers, compare a challenger with the champion, promote, roll back.

Aliases of a router *family* (default ``router``) live in the registry: ``<family>:champion`` (what
``cortex route`` and the service use), ``<family>:challenger`` (the latest candidate, used by
shadow mode) and ``<family>:archive`` (the previous champion, what rollback restores). Every
candidate is its own registry entry whose parent is the champion it was built from, so the
lineage of the deployed router can be followed back to the first one.

Promotion rule (:class:`PromotionRule`): on a held-out window of the most recent new records,
the challenger must beat the champion on the primary metric by ``margin`` and must not be worse on
the guard metrics by more than their tolerances. A challenger that fails stays registered (and
stays the ``challenger``) but is never deployed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cortex.errors import ConfigError, DataError, RoutingError
from cortex.hub.entry import RegistryEntry
from cortex.hub.paths import cortex_home, validate_name
from cortex.hub.registry import Registry
from cortex.routing.data import RecordError, concat_frames, log_record_to_row, read_training_set
from cortex.routing.evaluation import EvalReport, evaluate_router
from cortex.routing.masters import Master
from cortex.routing.policy import Decision, PolicyConfig
from cortex.routing.router import DATA_FILE, Router
from cortex.routing.training import TrainConfig, TrainResult, train_router

ROLES = ("champion", "challenger", "archive")
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "success_auroc": True, "ece": False, "duration_mae": False}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def alias(family: str, role: str) -> str:
    """Registry alias of a role in a family, e.g. ``router:champion``."""
    validate_name(family, "router family")
    if role not in ROLES:
        raise ConfigError.bad_choice("role", role, ROLES)
    return f"{family}:{role}"


def family_dir(family: str) -> Path:
    """``$CORTEX_HOME/routing/<family>``: the family's feedback and shadow logs."""
    validate_name(family, "router family")
    return cortex_home() / "routing" / family


def current(registry: Registry, family: str, role: str) -> str | None:
    """Entry name behind ``<family>:<role>``, or ``None``."""
    return registry.aliases().get(alias(family, role))


def text_source_parents(router: Router, registry: Registry) -> list[str]:
    """The text encoder's registry entry, when it came from the registry (lineage of the router)."""
    source = router.model.config.text_source
    if source and not Path(source).is_dir() and registry.exists(source):
        return [registry.get(source).name]
    return []


def register_router(
    router: Router, *, name: str, family: str = "router", registry: Registry | None = None,
    train_frame: pd.DataFrame | None = None, parents: list[str] | None = None, extra: Mapping[str, Any] | None = None,
) -> RegistryEntry:
    """Save ``router`` (with its training set) as a registry entry of kind ``router``."""
    reg = registry or Registry()
    validate_name(name)
    lineage = text_source_parents(router, reg) + [p for p in (parents or []) if p]
    with reg.stage() as tmp:
        router.save(tmp, train_frame, extra_meta={"family": family})
        entry = reg.register(
            tmp, name=name, kind="router", source="custom", parents=lineage, tags=["router", f"family:{family}"],
            extra={"family": family, **dict(extra or {})},
        )
    router.name = entry.name
    return entry


def promote(registry: Registry, family: str, name: str) -> dict[str, str | None]:
    """Make ``name`` the champion; the old champion becomes the archive."""
    entry = registry.get(name, kind="router")
    old = current(registry, family, "champion")
    if old == entry.name:
        return {"champion": entry.name, "archive": current(registry, family, "archive")}
    if old is not None:
        registry.set_alias(alias(family, "archive"), old)
    registry.set_alias(alias(family, "champion"), entry.name)
    if current(registry, family, "challenger") == entry.name:
        registry.set_alias(alias(family, "challenger"), None)
    registry.update(entry.name, extra={**entry.extra, "promoted_at": _now(), "previous_champion": old})
    return {"champion": entry.name, "archive": old}


def rollback(registry: Registry, family: str = "router") -> dict[str, str | None]:
    """Restore the archived champion. The rolled-back router becomes the challenger again and the
    archive steps one promotion further back (so repeated rollbacks walk the history)."""
    cur = current(registry, family, "champion")
    prev = current(registry, family, "archive")
    if prev is None:
        raise RoutingError(
            f"Router family {family!r} has no archived champion to roll back to (aliases: "
            f"{alias(family, 'champion')}={cur!r}). A rollback needs a previous promotion."
        )
    registry.set_alias(alias(family, "champion"), prev)
    before = registry.get(prev).extra.get("previous_champion")
    registry.set_alias(alias(family, "archive"), before if before and before in registry.names() else None)
    if cur is not None:
        registry.set_alias(alias(family, "challenger"), cur)
        e = registry.get(cur)
        registry.update(cur, extra={**e.extra, "rolled_back_at": _now()})
    return {"champion": prev, "archive": current(registry, family, "archive"), "rolled_back": cur}


# ---------------------------------------------------------------------------------------- promotion
@dataclass
class PromotionRule:
    """When a challenger replaces the champion.

    Attributes:
        primary: metric that must improve (``accuracy``, ``macro_f1``, ``success_auroc``, ``ece``,
            ``duration_mae``; for the last two lower is better).
        margin: required improvement of ``primary`` (absolute; relative for ``duration_mae``); a
            negative margin accepts a challenger that is at most that much worse.
        ece_tolerance / auroc_tolerance: how much worse ECE / success AUROC may get.
        mae_tolerance: how much worse (relative) the duration MAE may get.
    """

    primary: str = "macro_f1"
    margin: float = 0.01
    ece_tolerance: float = 0.02
    auroc_tolerance: float = 0.02
    mae_tolerance: float = 0.10

    def __post_init__(self) -> None:
        if self.primary not in HIGHER_IS_BETTER:
            raise ConfigError.bad_choice("promotion.primary", self.primary, HIGHER_IS_BETTER)
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) or not math.isfinite(self.margin):
            raise ConfigError(f"promotion.margin={self.margin!r} must be a finite number (negative: accept a slightly worse one).")
        for name in ("ece_tolerance", "auroc_tolerance", "mae_tolerance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"promotion.{name}={v!r} must be a finite number >= 0.")

    def decide(self, champion: EvalReport, challenger: EvalReport) -> tuple[bool, list[str]]:
        """``(promote, reasons)``; metrics that are NaN for either side are not compared."""
        reasons, ok = [], True
        a, b = getattr(champion, self.primary), getattr(challenger, self.primary)
        if not (math.isfinite(a) and math.isfinite(b)):
            return False, [f"{self.primary} is not available for both routers on the window"]
        if self.primary == "duration_mae":
            gain = (a - b) / max(a, 1e-9)
        else:
            gain = (b - a) if HIGHER_IS_BETTER[self.primary] else (a - b)
        if gain >= self.margin:
            reasons.append(f"{self.primary} improved by {gain:+.4f} (needed {self.margin})")
        else:
            ok = False
            reasons.append(f"{self.primary} changed by {gain:+.4f}, less than the margin {self.margin}")
        guards = (("ece", lambda x, y: y - x, self.ece_tolerance),
                  ("success_auroc", lambda x, y: x - y, self.auroc_tolerance),
                  ("duration_mae", lambda x, y: (y - x) / max(x, 1e-9), self.mae_tolerance))
        for metric, worse_by, tol in guards:
            if metric == self.primary:
                continue
            x, y = getattr(champion, metric), getattr(challenger, metric)
            if math.isfinite(x) and math.isfinite(y) and worse_by(x, y) > tol:
                ok = False
                reasons.append(f"{metric} got worse by {worse_by(x, y):.4f} (tolerance {tol})")
        return ok, reasons


@dataclass
class RetrainReport:
    """What ``cortex route retrain`` did (one JSON object)."""

    family: str
    champion: str
    challenger: str
    promoted: bool
    reasons: list[str]
    n_train: int
    n_window: int
    champion_metrics: dict[str, Any]
    challenger_metrics: dict[str, Any]
    validation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recent_window(frame: pd.DataFrame, fraction: float, minimum: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(older, window)``: the newest ``max(minimum, fraction * N)`` records by timestamp (file order
    breaks ties and stands in when there are no timestamps)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"window fraction={fraction!r} must be in (0, 1).")
    n = max(minimum, int(round(fraction * len(frame))))
    if len(frame) < n + minimum:
        raise DataError(
            f"Retraining needs at least {n + minimum} new records ({minimum} to train on beyond a window of {n}); "
            f"got {len(frame)}. Collect more feedback first."
        )
    ts = frame["timestamp"].fillna(-np.inf).to_numpy()
    order = np.lexsort((np.arange(len(frame)), ts))
    return frame.iloc[np.sort(order[:-n])].reset_index(drop=True), frame.iloc[np.sort(order[-n:])].reset_index(drop=True)


def retrain(
    new_frame: pd.DataFrame, *, family: str = "router", registry: Registry | None = None,
    rule: PromotionRule | None = None, window_fraction: float = 0.2, min_window: int = 20,
    train: TrainConfig | None = None, name: str | None = None, latency_n: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> RetrainReport:
    """Build a challenger from the champion's training set plus ``new_frame`` (minus the recent window),
    score both on the window, register the challenger, and promote it if ``rule`` says so."""
    reg = registry or Registry()
    rule = rule or PromotionRule()
    champ_name = current(reg, family, "champion")
    if champ_name is None:
        raise RoutingError(
            f"Router family {family!r} has no champion yet. Train one first: "
            f"cortex route train --data FILE.jsonl --family {family}"
        )
    champion = Router.load(champ_name, registry=reg)
    folder = reg.path(champ_name)
    old = read_training_set(folder / DATA_FILE) if (folder / DATA_FILE).is_file() else None
    older, window = recent_window(new_frame, window_fraction, min_window)
    train_frame = concat_frames([old, older])
    train_frame = train_frame[~train_frame["task_id"].isin(set(window["task_id"]))].reset_index(drop=True)
    cfg = champion.model.config
    masters = [Master(m["name"], m.get("description", "")) for m in cfg.masters]
    # the challenger keeps the champion's architecture (a router saved before a field existed reads its old default)
    model_kwargs = {k: getattr(cfg, k) for k in ("hidden_dim", "branch_dim", "num_layers", "dropout", "ensemble_size",
                                                 "freeze_text", "max_text_tokens", "context_hidden", "head_layout",
                                                 "text_depth", "text_layers", "lexical_buckets", "lexical_dim")}
    result: TrainResult = train_router(train_frame, masters, text_source=cfg.text_source, model_kwargs=model_kwargs,
                                       train=train, progress=progress)
    policy = champion.policy
    if champion.meta.get("knn_weight_from_validation"):  # the blend weight is learned, not a user setting
        policy = PolicyConfig.from_dict({**policy.to_dict(), "knn_weight": result.knn_weight})
    challenger = Router(result.model, policy, champion.rules, result.knn, success=result.success,
                        meta={"knn_weight_from_validation": bool(champion.meta.get("knn_weight_from_validation"))})
    champ_report = evaluate_router(champion, window, latency_n=latency_n)
    chall_report = evaluate_router(challenger, window, latency_n=latency_n)
    ok, reasons = rule.decide(champ_report, chall_report)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    entry = register_router(
        challenger, name=name or f"{family}-{stamp}", family=family, registry=reg, train_frame=train_frame,
        parents=[champ_name],
        extra={"built_from": champ_name, "validation": result.validation, "window_metrics": chall_report.to_dict(),
               "champion_window_metrics": champ_report.to_dict(), "promotion_reasons": reasons},
    )
    reg.set_alias(alias(family, "challenger"), entry.name)
    if ok:
        promote(reg, family, entry.name)
    return RetrainReport(
        family=family, champion=champ_name, challenger=entry.name, promoted=ok, reasons=reasons,
        n_train=len(train_frame), n_window=len(window), champion_metrics=champ_report.to_dict(),
        challenger_metrics=chall_report.to_dict(), validation=result.validation,
    )


# ---------------------------------------------------------------------------------------- logs
class JsonlLog:
    """An append-only JSONL file shared by threads; ``durable`` fsyncs every line (feedback)."""

    def __init__(self, path: str | os.PathLike, durable: bool = False):
        self.path = Path(path)
        self.durable = durable
        self._lock = threading.Lock()

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                if self.durable:
                    os.fsync(f.fileno())


class FeedbackLog(JsonlLog):
    """Outcomes reported for routed tasks, stored as routing-log lines (what retraining ingests)."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, durable=True)

    def append_outcome(self, record: Mapping[str, Any], masters: list[str]) -> dict[str, Any]:
        """Validate a routing-log record exactly as ingestion will, then append it."""
        try:
            log_record_to_row(dict(record), masters)
        except RecordError as e:
            raise DataError(f"feedback record is invalid: {e}.") from None
        self.append(record)
        return dict(record)


class ShadowRouter:
    """Champion plus an optional challenger on a deterministic ``fraction`` of the traffic.

    For tasks in the fraction (by a hash of the task id, else of the text) both decide and both
    decisions go to ``log``; the champion's decision is served unless ``serve_challenger`` (a
    canary), in which case the challenger's is.
    """

    def __init__(self, champion: Router, challenger: Router | None = None, fraction: float = 0.0,
                 log: JsonlLog | None = None, serve_challenger: bool = False):
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"shadow fraction={fraction!r} must be in [0, 1].")
        if challenger is not None and challenger.masters != champion.masters:
            raise RoutingError(
                f"The challenger's masters {challenger.masters} differ from the champion's {champion.masters}; "
                "shadow mode compares routers over the same masters."
            )
        self.champion, self.challenger, self.fraction = champion, challenger, fraction
        self.log, self.serve_challenger = log, serve_challenger

    def selected(self, key: str) -> bool:
        # blake2b mixes short, similar ids (task-1, task-2...) evenly; crc32 does not
        h = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")
        return self.challenger is not None and (h % 10_000) < self.fraction * 10_000

    def route(self, text: str, context: Mapping[str, Any] | None = None,
              task_id: str | None = None) -> tuple[Decision, Decision | None]:
        """``(served decision, challenger decision or None)``."""
        from cortex.routing.context import request_context

        return self.route_many([text], request_context(context, self.champion.masters)[None, :], [task_id])[0]

    def route_many(self, texts: list[str], contexts: np.ndarray,
                   task_ids: list[str | None]) -> list[tuple[Decision, Decision | None]]:
        """Batched :meth:`route`: ``contexts`` are raw ``(B, F)`` features (already validated)."""
        champ = self.champion.route_many(texts, contexts)
        picked = [i for i, (t, k) in enumerate(zip(texts, task_ids)) if self.selected(k or t)]
        out: list[tuple[Decision, Decision | None]] = [(d, None) for d in champ]
        if not picked:
            return out
        chall = self.challenger.route_many([texts[i] for i in picked], contexts[picked])
        for i, c in zip(picked, chall):
            d = champ[i]
            out[i] = (c if self.serve_challenger else d, c)
            if self.log is not None:
                self.log.append({"time": time.time(), "task_id": task_ids[i], "served": "challenger"
                                 if self.serve_challenger else "champion", "agree": d.master == c.master,
                                 "champion": d.to_dict(), "challenger": c.to_dict()})
        return out
