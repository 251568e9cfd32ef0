from __future__ import annotations

import pytest

from cortex.errors import ConfigError, RetrievalError
from cortex.retrieval.memory import LongTermMemory, MemoryHit, ShortTermMemory, TaskRecord, knn_vote
from cortex.retrieval.tokens import HFTokenCounter


def test_short_term_memory_evicts_oldest_within_budget(embedder):
    counter = HFTokenCounter(embedder.tokenizer)
    mem = ShortTermMemory(budget_tokens=13, counter=counter)
    texts = ["one two three", "four five six seven", "eight nine", "ten eleven twelve thirteen fourteen"]
    sizes = [counter.count(t) for t in texts]
    for i, t in enumerate(texts):
        mem.add("user", t)
        # closed form: keep the longest suffix of turns whose sizes sum to <= 13
        kept, total = [], 0
        for s, tt in reversed(list(zip(sizes[: i + 1], texts[: i + 1]))):
            if total + s > 13:
                break
            kept.insert(0, tt)
            total += s
        assert [t.text for t in mem.turns] == kept and mem.tokens == total <= 13
    big = mem.add("tool", "word " * 40)
    assert big.tokens == 13 and len(mem.turns) == 1 and mem.render().startswith("tool: word word")
    with pytest.raises(ConfigError):
        ShortTermMemory(budget_tokens=0, counter=counter)


def test_long_term_memory_search_and_vote(tmp_path, embedder):
    mem = LongTermMemory(tmp_path / "mem", embedder)
    mem.add([
        TaskRecord("t1", "Solve the quadratic equation x^2 - 5x + 6 = 0", "math", True),
        TaskRecord("t2", "Integrate x squared from 0 to 3", "math", False),
        TaskRecord("t3", "Explain the causes of the French Revolution", "humanities", True),
        TaskRecord("t4", "Fix the segfault in the C parser", "computing", True),
        TaskRecord("t5", "Find the roots of the polynomial x^2 + x - 2", "math", True),
    ])
    hits = mem.search("what are the roots of x^2 - 3x + 2", k=3)
    assert [h.master for h in hits[:2]] == ["math", "math"]
    assert {h.record.task_id for h in hits[:2]} <= {"t1", "t2", "t5"}
    assert all(isinstance(h.success, bool) for h in hits)
    assert hits[0].score >= hits[1].score >= hits[2].score

    again = LongTermMemory(tmp_path / "mem", embedder)  # persisted
    assert len(again) == 5 and again.get("t3").master == "humanities"
    mem.add(TaskRecord("t3", "Explain the causes of the French Revolution", "humanities", False))  # replaced
    assert len(mem) == 5 and mem.get("t3").success is False
    with pytest.raises(RetrievalError, match="summary"):
        mem.add(TaskRecord("t9", " ", "math", True))


def test_knn_vote_closed_form():
    def hit(master, ok, s):
        return MemoryHit(TaskRecord("x", "s", master, ok), s)

    hits = [hit("math", True, 0.9), hit("math", False, 0.8), hit("science", True, 0.7), hit("science", True, 0.3)]
    assert knn_vote(hits) == pytest.approx({"math": 0.9, "science": 1.0})
    assert list(knn_vote(hits)) == ["science", "math"]
    assert knn_vote(hits, failure_weight=-1.0) == pytest.approx({"math": 0.1, "science": 1.0})
