"""Templates (versions, A/B by task id, outcomes) and prompt assembly within a token budget."""

from __future__ import annotations

import hashlib

import pytest

from cortex.errors import ConfigError, RetrievalError
from cortex.retrieval.chunking import Chunk
from cortex.retrieval.context import ContextConfig, build_context, dedupe, format_chunk
from cortex.retrieval.index import SearchHit
from cortex.retrieval.templates import DEFAULT_NAME, TemplateStore
from cortex.retrieval.tokens import HFTokenCounter


@pytest.fixture(scope="module")
def counter(embedder):
    return HFTokenCounter(embedder.tokenizer)


def test_versions_are_immutable_and_deduplicated(tmp_path):
    store = TemplateStore(tmp_path / "t")
    v1 = store.add("coder", "Task: {task}\n{context}")
    v2 = store.add("coder", "Do this: {task}\nContext:\n{context}\n{memory}", note="more room")
    assert (v1.version, v2.version) == (1, 2)
    assert store.add("coder", "Task: {task}\n{context}") == v1  # same text: same version
    assert store.get("coder").version == 2 and store.get("coder", 1).text == v1.text
    assert v1.sha256 == hashlib.sha256(v1.text.encode()).hexdigest()
    assert store.get(DEFAULT_NAME).version == 1  # the built-in template appears on first use
    assert store.names() == ["coder", "worker"]
    with pytest.raises(ConfigError, match="Unknown key 'question'"):
        store.add("coder", "{question}")
    with pytest.raises(ConfigError, match="no \\{task\\}"):
        store.add("coder", "just {context}")
    with pytest.raises(RetrievalError, match="Did you mean 'coder'"):
        store.get("codr")


def test_ab_assignment_is_a_stable_hash_split(tmp_path):
    store = TemplateStore(tmp_path / "t")
    store.add("w", "A {task}")
    store.add("w", "B {task}")
    store.set_ab("w", [1, 2], [1.0, 3.0])
    picks = {f"task-{i}": store.assign("w", f"task-{i}").version for i in range(400)}
    # recompute the split independently: uniform from the first 8 bytes of sha256("w\0<id>")
    for tid, v in picks.items():
        u = int.from_bytes(hashlib.sha256(f"w\x00{tid}".encode()).digest()[:8], "big") / 2**64
        assert v == (1 if u < 0.25 else 2)
    share = sum(v == 1 for v in picks.values()) / 400
    assert 0.18 < share < 0.32
    assert store.assign("w", "task-7").version == picks["task-7"]  # same task, same arm
    with pytest.raises(ConfigError, match="not stored"):
        store.set_ab("w", [1, 5])


def test_outcomes_are_logged_against_the_assigned_version(tmp_path):
    store = TemplateStore(tmp_path / "t")
    store.add("w", "A {task}")
    store.add("w", "B {task}")
    store.set_ab("w", [1, 2])
    versions = {t: store.assign("w", t).version for t in ("a", "b", "c", "d", "e", "f")}
    for t, ok in zip(versions, (True, False, True, True, False, True)):
        store.log_outcome("w", t, ok, score=1.0 if ok else 0.0)
    stats = {s.version: s for s in store.stats("w")}
    for v in (1, 2):
        mine = [t for t, vv in versions.items() if vv == v]
        oks = [ok for t, ok in zip(versions, (True, False, True, True, False, True)) if versions[t] == v]
        assert stats[v].assigned == stats[v].outcomes == len(mine)
        if mine:
            assert stats[v].success_rate == pytest.approx(sum(oks) / len(oks))
    with pytest.raises(RetrievalError, match="never assigned"):
        store.log_outcome("w", "unknown-task", True)
    assert store.log_outcome("w", "unknown-task", True, version=1)["version"] == 1


def _hit(path, start, end, text, score=1.0):
    return SearchHit(Chunk(f"{path}{start}", path, start, end, "lines", "", text, "h"), score)


def test_dedupe_drops_repeats_and_overlaps():
    hits = [_hit("a.py", 1, 10, "x = 1"), _hit("a.py", 8, 20, "y = 2"), _hit("b.py", 1, 3, "x  =  1"),
            _hit("a.py", 11, 20, "z = 3"), _hit("b.py", 5, 6, "w = 4")]
    kept, dropped = dedupe(hits)
    assert [(h.chunk.path, h.chunk.start_line) for h in kept] == [("a.py", 1), ("a.py", 11), ("b.py", 5)]
    assert dropped == 2


def test_context_fits_budget_and_cites(built, tmp_path, counter):
    index, _ = built
    store = TemplateStore(tmp_path / "t")
    ctx = build_context(index, "write the registry index atomically", templates=store, task_id="t-1",
                        config=ContextConfig(k=3, budget_tokens=400), counter=counter)
    assert ctx.tokens == counter.count(ctx.prompt) <= 400
    assert ctx.template == "worker" and ctx.version == 1 and ctx.task_id == "t-1"
    assert ctx.citations and ctx.citations[0].ref in ctx.prompt
    assert "[pkg/registry.py:L14-L21]" in ctx.prompt
    assert "write the registry index atomically" in ctx.prompt
    assert store.assigned_version("worker", "t-1") == 1
    # every included block is counted: template + task + blocks
    blocks = sum(c.tokens for c in ctx.citations)
    assert blocks <= 400

    small = build_context(index, "write the registry index atomically", templates=store, task_id="t-2",
                          config=ContextConfig(k=3, budget_tokens=170), counter=counter)
    assert small.tokens <= 170 and len(small.citations) < len(ctx.citations) and small.over_budget > 0

    with pytest.raises(ConfigError, match="budget"):
        build_context(index, "x", templates=store, config=ContextConfig(budget_tokens=10), counter=counter)


def test_format_chunk_cites_path_and_lines():
    c = Chunk("i", "src/a.py", 3, 9, "function", "f", "def f():\n    pass", "h")
    assert format_chunk(c) == "[src/a.py:L3-L9] (function f)\n```\ndef f():\n    pass\n```\n"
