from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from cortex.errors import ConfigError
from cortex.retrieval.bm25 import BM25, code_tokens
from cortex.retrieval.fusion import reciprocal_rank_fusion


def bm25_by_formula(docs: list[list[str]], query: list[str], k1: float, b: float) -> list[float]:
    """BM25 written out term by term from the Robertson/Lucene formula."""
    n = len(docs)
    avgdl = sum(map(len, docs)) / n
    out = []
    for d in docs:
        tf = Counter(d)
        s = 0.0
        for t in query:
            df = sum(t in doc for doc in docs)
            if tf[t]:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                s += idf * tf[t] * (k1 + 1) / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return out


def test_code_tokens_split_identifiers():
    assert code_tokens("def load_tokenizer(name_or_path)") == [
        "def", "load_tokenizer", "load", "tokenizer", "name_or_path", "name", "path"]
    assert code_tokens("HTTPServerError registries") == ["httpservererror", "http", "server", "error", "registry"]
    assert code_tokens("what is the") == []


@pytest.mark.parametrize("k1, b", [(1.2, 0.75), (0.7, 0.3), (2.0, 1.0)])
def test_scores_match_formula(k1, b):
    texts = ["apple banana apple", "banana cherry", "cherry cherry cherry date", "eggplant", "apple date fig grape"]
    bm = BM25(texts, k1=k1, b=b)
    docs = [code_tokens(t) for t in texts]
    for query in ["apple", "cherry date", "banana banana fig", "zucchini"]:
        expected = bm25_by_formula(docs, code_tokens(query), k1, b)
        np.testing.assert_allclose(bm.scores(query), expected, rtol=1e-12, atol=1e-12)


def test_bad_parameters():
    with pytest.raises(ConfigError, match="k1"):
        BM25(["a"], k1=-1)


def test_rrf_closed_form():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60)
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 63}
    assert [d for d, _ in fused] == ["a", "c", "b", "d"]
    for d, s in fused:
        assert s == pytest.approx(expected[d])
    weighted = dict(reciprocal_rank_fusion([["a"], ["b"]], weights=[1.0, 3.0], k=5))
    assert weighted == pytest.approx({"a": 1 / 6, "b": 3 / 6})


def test_rrf_rejects_mismatched_weights():
    with pytest.raises(ConfigError, match="one weight per ranking"):
        reciprocal_rank_fusion([["a"], ["b"]], weights=[1.0])
