"""Worker memory: a short-term buffer within a token budget, and a long-term store of past tasks.

The long-term memory keeps one record per finished task (its summary, the master it was routed
to, whether it succeeded) with the summary's embedding. :meth:`LongTermMemory.search` returns the
most similar past tasks; :func:`knn_vote` turns them into per-master votes for the router.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cortex.errors import ConfigError, RetrievalError
from cortex.hub.paths import cortex_home
from cortex.retrieval.collection import Collection
from cortex.retrieval.embedder import Embedder, default_embedder
from cortex.retrieval.tokens import TokenCounter, default_token_counter

KIND = "memory"


@dataclass
class Turn:
    """One entry of the short-term buffer and its token count."""

    role: str
    text: str
    tokens: int


class ShortTermMemory:
    """The most recent turns whose tokens sum to at most ``budget_tokens``; older turns fall out first.

    A single turn longer than the whole budget is cut to its first ``budget_tokens`` tokens (so the
    buffer is never empty after an add, and never over budget).
    """

    def __init__(self, budget_tokens: int = 1024, counter: TokenCounter | None = None):
        if budget_tokens < 1:
            raise ConfigError(f"budget_tokens={budget_tokens} must be at least 1.")
        self.budget = budget_tokens
        self.counter = counter or default_token_counter()
        self.turns: deque[Turn] = deque()
        self.tokens = 0
        self.evicted = 0

    def add(self, role: str, text: str) -> Turn:
        """Append a turn, evicting the oldest ones until the buffer fits its budget."""
        n = self.counter.count(text)
        if n > self.budget:
            text = self.counter.truncate(text, self.budget)
            n = self.counter.count(text)
        turn = Turn(role, text, n)
        self.turns.append(turn)
        self.tokens += n
        while self.tokens > self.budget:
            old = self.turns.popleft()
            self.tokens -= old.tokens
            self.evicted += 1
        return turn

    def render(self) -> str:
        """The buffer as ``role: text`` lines, oldest first."""
        return "\n".join(f"{t.role}: {t.text}" for t in self.turns)

    def clear(self) -> None:
        self.turns.clear()
        self.tokens = 0


@dataclass
class TaskRecord:
    """A finished task as the long-term memory keeps it.

    ``master`` is the worker group it was routed to; ``success`` whether it succeeded;
    ``extra`` anything else worth keeping (duration, worker id, template version).
    """

    task_id: str
    summary: str
    master: str
    success: bool
    time: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MemoryHit:
    """A past task similar to the query, with its cosine similarity."""

    record: TaskRecord
    score: float

    @property
    def master(self) -> str:
        return self.record.master

    @property
    def success(self) -> bool:
        return self.record.success


class LongTermMemory:
    """Past tasks with embedded summaries, in a folder (default ``$CORTEX_HOME/rag/memory``).

    Several processes (router replicas, workers) may record outcomes into one folder at once: each
    commit builds on the newest one, and reads see what the others committed.
    """

    def __init__(self, folder: str | Path | None = None, embedder: Embedder | None = None):
        folder = Path(folder) if folder is not None else cortex_home() / "rag" / "memory"
        self.collection = Collection.open(folder, embedder or default_embedder(), kind=KIND)

    def __len__(self) -> int:
        self.collection.sync()
        return len(self.collection)

    def add(self, records: list[TaskRecord] | TaskRecord, commit: bool = True) -> None:
        """Store records (a task id seen before is replaced) and commit unless told not to."""
        records = [records] if isinstance(records, TaskRecord) else list(records)
        for r in records:
            if not r.task_id or not r.summary.strip() or not r.master:
                raise RetrievalError(
                    f"Task record {r.task_id!r} needs a task_id, a non-empty summary and a master; got {asdict(r)}."
                )
            if not r.time:
                r.time = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.collection.add([r.task_id for r in records], [r.summary for r in records],
                            [asdict(r) for r in records])
        if commit:
            self.collection.commit()

    def get(self, task_id: str) -> TaskRecord:
        """The record of ``task_id``."""
        self.collection.sync()
        rec = self.collection.records.get(task_id)
        if rec is None:
            raise RetrievalError(f"No task {task_id!r} in long-term memory ({len(self)} tasks stored).")
        return TaskRecord(**{k: v for k, v in rec.items() if k != "id"})

    def search(self, text: str, k: int = 10) -> list[MemoryHit]:
        """The ``k`` past tasks most similar to ``text``, best first."""
        if k < 1:
            raise ConfigError(f"k={k} must be at least 1.")
        dq = self.collection.dense(text, k)
        return [MemoryHit(self.get(i), s) for i, s in dq.neighbours]


def knn_vote(hits: list[MemoryHit], failure_weight: float = 0.0) -> dict[str, float]:
    """Per-master vote of neighbours: a success adds its similarity, a failure ``failure_weight`` times it.

    With the default 0 only neighbours that succeeded vote; a negative weight lets failures
    count against their master. Masters are returned best first.
    """
    votes: dict[str, float] = {}
    for h in hits:
        w = h.score if h.success else failure_weight * h.score
        votes[h.master] = votes.get(h.master, 0.0) + w
    return dict(sorted(votes.items(), key=lambda kv: -kv[1]))
