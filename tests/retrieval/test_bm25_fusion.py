from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from cortex.errors import ConfigError
from cortex.retrieval.bm25 import BM25, code_tokens
from cortex.retrieval.fusion import FusionConfig, reciprocal_rank_fusion, relative_score_fusion


def bm25_by_formula(docs: list[list[str]], query: list[str], k1: float, b: float) -> list[float]:
    """BM25 written out term by term: Lucene's idf and tf saturation, without the constant ``k1 + 1``."""
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
                s += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
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
        np.testing.assert_allclose(bm.scores(query), expected, rtol=1e-5, atol=1e-6)  # bm25s scores in float32
    assert BM25([]).scores("apple").shape == (0,)


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


def test_relative_score_fusion_closed_form():
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.4)]
    bm25 = [("c", 12.0), ("d", 7.0), ("a", 2.0)]
    fused = dict(relative_score_fusion([dense, bm25], weights=[0.3, 0.7]))
    # min-max per list: dense a=1, b=0.2, c=0; bm25 c=1, d=0.5, a=0
    assert fused == pytest.approx({"a": 0.3, "b": 0.3 * 0.2, "c": 0.7, "d": 0.7 * 0.5})
    assert [d for d, _ in relative_score_fusion([dense, bm25], [0.3, 0.7])] == ["c", "d", "a", "b"]
    # a list of equal scores gives each of its documents full marks; an empty list gives nothing
    assert dict(relative_score_fusion([[("x", 3.0), ("y", 3.0)], []])) == {"x": 1.0, "y": 1.0}


def test_fusion_config_fuses_by_its_method_and_validates():
    dense, bm25 = [("a", 0.9), ("b", 0.1)], [("b", 5.0), ("c", 1.0)]
    rrf = FusionConfig("rrf", bm25_weight=0.5, rrf_k=60)
    assert rrf.fuse(dense, bm25) == reciprocal_rank_fusion([["a", "b"], ["b", "c"]], [0.5, 0.5], 60)
    assert FusionConfig("score", bm25_weight=0.8).fuse(dense, bm25)[0][0] == "b"
    assert FusionConfig("score", bm25_weight=0.0).fuse(dense, bm25)[0][0] == "a"
    with pytest.raises(ConfigError, match="fusion.method"):
        FusionConfig("max")
    with pytest.raises(ConfigError, match="bm25_weight"):
        FusionConfig(bm25_weight=1.5)
    with pytest.raises(ConfigError, match="rrf_k"):
        FusionConfig(rrf_k=0)
