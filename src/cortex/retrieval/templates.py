"""Versioned prompt templates with A/B assignment by task id and outcomes logged per version.

Layout under ``$CORTEX_HOME/rag/templates`` (or any folder)::

    <name>/v0001.json        # {"name", "version", "text", "sha256", "created", "note"}
    <name>/ab.json           # optional: {"versions": [1, 2], "weights": [0.5, 0.5]}
    <name>/assignments.jsonl # {"task_id", "version", "time"} each time a task was given a version
    <name>/outcomes.jsonl    # {"task_id", "version", "success", "score", "time"}

A version is immutable once written. The same task id always gets the same version (the choice
is a hash of template name and task id), so a retried task sees the prompt it saw before.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from cortex.errors import ConfigError, RetrievalError
from cortex.hub.paths import cortex_home, validate_name
from cortex.retrieval._io import append_jsonl, atomic_write_json, read_jsonl

FIELDS = ("task", "context", "memory")
DEFAULT_NAME = "worker"
DEFAULT_TEXT = """You are a worker agent. Complete the task below. Use the retrieved context when it helps and \
cite it by path and lines (e.g. [src/x.py:L3-L9]); say so if it is not enough.

## Task
{task}

## What similar past tasks taught
{memory}

## Retrieved context
{context}
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def template_fields(text: str) -> list[str]:
    """Field names used by ``text`` (``str.format`` syntax)."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise ConfigError(f"Template text is not valid format syntax ({e}); write literal braces as '{{' and '}}'.") from e


def validate_template(text: str) -> None:
    """Raise :class:`ConfigError` unless ``text`` uses only :data:`FIELDS` and includes ``{task}``."""
    fields = template_fields(text)
    for f in fields:
        if f not in FIELDS:
            raise ConfigError.unknown_key(f or "{}", FIELDS, where="template fields")
    if "task" not in fields:
        raise ConfigError("The template has no {task} field; add one so the worker sees its task.")


@dataclass(frozen=True)
class TemplateVersion:
    """One immutable version of a named template."""

    name: str
    version: int
    text: str
    sha256: str
    created: str
    note: str = ""

    def render(self, **values: str) -> str:
        """The prompt with ``values`` filled in (missing fields become empty)."""
        return self.text.format(**{f: values.get(f, "") for f in FIELDS})


@dataclass
class VersionStats:
    """Outcomes logged against one version: count, successes, success rate, mean score (None if no scores)."""

    version: int
    assigned: int
    outcomes: int
    successes: int
    success_rate: float | None
    mean_score: float | None


class TemplateStore:
    """Named, versioned templates in a folder (default ``$CORTEX_HOME/rag/templates``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cortex_home() / "rag" / "templates"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.root / ".lock"), timeout=60)

    def _dir(self, name: str) -> Path:
        return self.root / validate_name(name, "template name")

    def names(self) -> list[str]:
        """Names of stored templates, sorted."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("v*.json")))

    def versions(self, name: str) -> list[TemplateVersion]:
        """All versions of ``name``, oldest first (the built-in default is created on first use)."""
        folder = self._dir(name)
        if name == DEFAULT_NAME and not any(folder.glob("v*.json")):
            self.add(DEFAULT_NAME, DEFAULT_TEXT, note="built-in default")
        out = []
        for p in sorted(folder.glob("v*.json")):
            try:
                out.append(TemplateVersion(**json.loads(p.read_text(encoding="utf-8"))))
            except (json.JSONDecodeError, TypeError) as e:
                raise RetrievalError(f"Template file {str(p)!r} is corrupt ({e}); delete it or restore it.") from e
        return out

    def get(self, name: str, version: int | None = None) -> TemplateVersion:
        """Version ``version`` of ``name`` (latest if None)."""
        versions = self.versions(name)
        if not versions:
            from cortex.errors import closest

            near = closest(name, self.names())
            hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
            raise RetrievalError(f"No template named {name!r}.{hint} Add one with: cortex rag template add {name} FILE")
        if version is None:
            return versions[-1]
        for v in versions:
            if v.version == version:
                return v
        raise RetrievalError(
            f"Template {name!r} has no version {version}; it has {[v.version for v in versions]}."
        )

    def add(self, name: str, text: str, note: str = "") -> TemplateVersion:
        """Store ``text`` as the next version of ``name`` (or return the existing version with that text)."""
        validate_template(text)
        folder = self._dir(name)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            existing = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("v*.json"))]
            for e in existing:
                if e["sha256"] == digest:
                    return TemplateVersion(**e)
            version = (existing[-1]["version"] + 1) if existing else 1
            tv = TemplateVersion(name, version, text, digest, _now(), note)
            atomic_write_json(folder / f"v{version:04d}.json", asdict(tv))
        return tv

    def set_ab(self, name: str, versions: list[int], weights: list[float] | None = None) -> None:
        """Split tasks of ``name`` between ``versions`` in proportion to ``weights`` (equal by default)."""
        known = {v.version for v in self.versions(name)}
        unknown = [v for v in versions if v not in known]
        if not versions or unknown:
            raise ConfigError(f"A/B versions {versions} of {name!r}: {unknown or 'none given'} not stored; "
                              f"stored versions are {sorted(known)}.")
        weights = weights or [1.0] * len(versions)
        if len(weights) != len(versions) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"A/B weights {weights} must be one non-negative number per version, not all zero.")
        atomic_write_json(self._dir(name) / "ab.json", {"versions": versions, "weights": weights})

    def ab(self, name: str) -> dict[str, Any] | None:
        """The A/B split of ``name``, or None when every task gets the latest version."""
        p = self._dir(name) / "ab.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None

    def assign(self, name: str, task_id: str, record: bool = True) -> TemplateVersion:
        """The version of ``name`` that ``task_id`` gets (A/B by hash), recorded for :meth:`log_outcome`."""
        split = self.ab(name)
        if split is None:
            tv = self.get(name)
        else:
            # uniform in [0, 1) from the hash: stable across processes and machines, unlike hash()
            u = int.from_bytes(hashlib.sha256(f"{name}\x00{task_id}".encode()).digest()[:8], "big") / 2**64
            total, acc = sum(split["weights"]), 0.0
            chosen = split["versions"][-1]
            for v, w in zip(split["versions"], split["weights"]):
                acc += w / total
                if u < acc:
                    chosen = v
                    break
            tv = self.get(name, chosen)
        if record:
            append_jsonl(self._dir(name) / "assignments.jsonl", {"task_id": task_id, "version": tv.version, "time": _now()})
        return tv

    def assigned_version(self, name: str, task_id: str) -> int | None:
        """The version last assigned to ``task_id`` under ``name``, if any."""
        found = [a["version"] for a in read_jsonl(self._dir(name) / "assignments.jsonl") if a["task_id"] == task_id]
        return found[-1] if found else None

    def log_outcome(self, name: str, task_id: str, success: bool, score: float | None = None,
                    version: int | None = None) -> dict[str, Any]:
        """Record how ``task_id`` went against the version it was given (or ``version`` if passed)."""
        if version is None:
            version = self.assigned_version(name, task_id)
            if version is None:
                raise RetrievalError(
                    f"Task {task_id!r} was never assigned a version of template {name!r}. Pass --version, "
                    f"or build its prompt first with: cortex rag context TASK --task-id {task_id} --template {name}"
                )
        else:
            self.get(name, version)
        rec = {"task_id": task_id, "version": version, "success": bool(success),
               "score": None if score is None else float(score), "time": _now()}
        append_jsonl(self._dir(name) / "outcomes.jsonl", rec)
        return rec

    def stats(self, name: str) -> list[VersionStats]:
        """Per-version assignment and outcome counts of ``name``."""
        folder = self._dir(name)
        assigned: dict[int, set[str]] = {}
        for a in read_jsonl(folder / "assignments.jsonl"):
            assigned.setdefault(a["version"], set()).add(a["task_id"])
        outcomes: dict[int, list[dict[str, Any]]] = {}
        for o in read_jsonl(folder / "outcomes.jsonl"):
            outcomes.setdefault(o["version"], []).append(o)
        out = []
        for tv in self.versions(name):
            os_ = outcomes.get(tv.version, [])
            succ = sum(o["success"] for o in os_)
            scores = [o["score"] for o in os_ if o.get("score") is not None]
            out.append(VersionStats(tv.version, len(assigned.get(tv.version, ())), len(os_), succ,
                                    succ / len(os_) if os_ else None,
                                    sum(scores) / len(scores) if scores else None))
        return out
