"""Assemble a worker's prompt: a versioned template, the task, memory, and cited chunks within a budget.

Chunks come from hybrid search, best first. A chunk is dropped as a duplicate when its text was
already taken (same normalised text anywhere) or when its lines overlap a chunk already taken
from the same file (overlapping windows say the same thing twice). Chunks are then taken greedily
while the whole prompt stays within ``budget_tokens``; one that does not fit is skipped for a
smaller one further down the list.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from cortex.errors import ConfigError
from cortex.retrieval.chunking import Chunk
from cortex.retrieval.index import CodeIndex, SearchHit
from cortex.retrieval.templates import DEFAULT_NAME, TemplateStore
from cortex.retrieval.tokens import TokenCounter, default_token_counter


@dataclass
class ContextConfig:
    """How much context a worker gets.

    Args:
        k: most chunks to include.
        candidates: chunks retrieved before dedup and budgeting.
        budget_tokens: the whole prompt's token budget.
        mode: search mode (``hybrid``, ``dense``, ``bm25``).
    """

    k: int = 8
    candidates: int = 30
    budget_tokens: int = 2048
    mode: str = "hybrid"

    def __post_init__(self) -> None:
        for name in ("k", "candidates", "budget_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"context.{name}={getattr(self, name)} must be at least 1.")
        if self.candidates < self.k:
            raise ConfigError(f"context.candidates={self.candidates} must be at least k={self.k}.")


@dataclass
class Citation:
    """A chunk placed in the prompt: where it comes from and its retrieval score."""

    path: str
    start_line: int
    end_line: int
    name: str
    score: float
    tokens: int

    @property
    def ref(self) -> str:
        return f"{self.path}:L{self.start_line}-L{self.end_line}"


@dataclass
class WorkerContext:
    """An assembled prompt and its provenance.

    Attributes:
        prompt: the rendered template.
        template / version: which template version produced it (log outcomes against these).
        task_id: the id the A/B assignment hashed.
        citations: chunks included, in prompt order.
        tokens: prompt tokens by the counter used; never above ``budget``.
        duplicates: candidates dropped as duplicates; over_budget: dropped for lack of room.
        query_truncated: the task was longer than the embedder's limit (only its start was embedded).
    """

    prompt: str
    template: str
    version: int
    task_id: str
    citations: list[Citation] = field(default_factory=list)
    tokens: int = 0
    budget: int = 0
    duplicates: int = 0
    over_budget: int = 0
    query_truncated: bool = False


def format_chunk(chunk: Chunk) -> str:
    """A chunk as it appears in a prompt: a citation header and a fenced block."""
    label = f" ({chunk.kind} {chunk.name})" if chunk.name else ""
    return f"[{chunk.citation}]{label}\n```\n{chunk.text}\n```\n"


def _norm_hash(text: str) -> str:
    return hashlib.sha1(re.sub(r"\s+", " ", text).strip().encode()).hexdigest()


def dedupe(hits: list[SearchHit]) -> tuple[list[SearchHit], int]:
    """Hits without repeated text or line overlap within a file (earlier hits win) and how many were dropped."""
    kept: list[SearchHit] = []
    seen_text: set[str] = set()
    spans: dict[str, list[tuple[int, int]]] = {}
    for h in hits:
        c = h.chunk
        digest = _norm_hash(c.text)
        overlaps = c.start_line > 0 and any(
            c.start_line <= e and s <= c.end_line for s, e in spans.get(c.path, [])
        )
        if digest in seen_text or overlaps:
            continue
        seen_text.add(digest)
        spans.setdefault(c.path, []).append((c.start_line, c.end_line))
        kept.append(h)
    return kept, len(hits) - len(kept)


def default_task_id(task: str) -> str:
    """A stable id for a task text (so an unnamed task keeps its A/B arm across calls)."""
    return hashlib.sha256(task.encode("utf-8")).hexdigest()[:16]


def build_context(index: CodeIndex, task: str, *, templates: TemplateStore | None = None,
                  template: str = DEFAULT_NAME, task_id: str | None = None, memory: str = "",
                  config: ContextConfig | None = None, counter: TokenCounter | None = None) -> WorkerContext:
    """Build the prompt for ``task`` from ``template`` (A/B-assigned version) and retrieved chunks.

    The rendered prompt is at most ``config.budget_tokens`` tokens by ``counter``; if the template,
    task and memory alone exceed it, the memory and then the task are cut to fit (and no chunk goes in).
    """
    config = config or ContextConfig()
    templates = templates or TemplateStore()
    counter = counter or default_token_counter()
    task_id = task_id or default_task_id(task)
    tv = templates.assign(template, task_id)

    def render(ctx: str, mem: str, tsk: str) -> str:
        return tv.render(task=tsk, context=ctx, memory=mem or "(none)")

    skeleton = counter.count(render("", "", ""))
    if skeleton > config.budget_tokens:
        raise ConfigError(
            f"budget_tokens={config.budget_tokens} is smaller than template {tv.name!r} v{tv.version} itself "
            f"({skeleton} tokens); raise the budget (--budget) or use a shorter template."
        )
    # The fixed part first: if it does not fit, shorten memory, then the task (reported by a smaller
    # `tokens` and no citations).
    base = counter.count(render("", memory, task))
    if base > config.budget_tokens:
        over = base - config.budget_tokens
        memory = counter.truncate(memory, max(counter.count(memory) - over, 0))
        base = counter.count(render("", memory, task))
        if base > config.budget_tokens:
            over = base - config.budget_tokens
            task_short = counter.truncate(task, max(counter.count(task) - over, 0))
            prompt = render("", memory, task_short)
            return WorkerContext(prompt, tv.name, tv.version, task_id, tokens=counter.count(prompt),
                                 budget=config.budget_tokens)

    result = index.search(task, k=config.candidates, mode=config.mode)
    hits, duplicates = dedupe(result.hits)
    room = config.budget_tokens - base
    blocks: list[str] = []
    cites: list[Citation] = []
    over_budget = 0
    for h in hits:
        if len(blocks) == config.k:
            break
        block = format_chunk(h.chunk)
        need = counter.count(block + "\n")
        if need > room:
            over_budget += 1
            continue
        room -= need
        blocks.append(block)
        c = h.chunk
        cites.append(Citation(c.path, c.start_line, c.end_line, c.name, h.score, need))
    prompt = render("\n".join(blocks) if blocks else "(nothing relevant found)", memory, task)
    tokens = counter.count(prompt)
    # Tokens at block joins can differ by a few from the sum of parts; drop the last block until it fits.
    while tokens > config.budget_tokens and blocks:
        blocks.pop()
        cites.pop()
        over_budget += 1
        prompt = render("\n".join(blocks) if blocks else "(nothing relevant found)", memory, task)
        tokens = counter.count(prompt)
    return WorkerContext(prompt, tv.name, tv.version, task_id, cites, tokens, config.budget_tokens,
                         duplicates, over_budget, result.truncated)
