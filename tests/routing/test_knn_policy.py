"""kNN vote and decision policy against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from cortex.errors import ConfigError
from cortex.routing.knn import KNNMemory
from cortex.routing.policy import PolicyConfig, Prediction, decide, utilities
from cortex.routing.rules import RuleSet

M = ["a", "b", "c", "d", "e"]


def test_knn_vote_is_similarity_weighted():
    mem = KNNMemory(dim=3, num_classes=5, k=3, min_similarity=0.1)
    mem.add(np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]], float), [0, 1, 1, 2, 4])
    vote = mem.vote(np.array([2.0, 0.5, 0.0]))  # normalized inside
    q = np.array([2.0, 0.5, 0.0]) / np.linalg.norm([2.0, 0.5, 0.0])
    s = {0: q @ [1, 0, 0], 1: q @ (np.array([1, 1, 0]) / np.sqrt(2)) + q @ [0, 1, 0]}
    total = s[0] + s[1]
    np.testing.assert_allclose(vote.probs[0], [s[0] / total, s[1] / total, 0, 0, 0], rtol=1e-6)
    assert vote.support[0] == 3 and vote.top_similarity[0] == pytest.approx(q @ [1, 0, 0])


def test_knn_min_similarity_empty_memory_and_save(tmp_path):
    mem = KNNMemory(dim=2, num_classes=5, k=4, min_similarity=0.9)
    assert mem.vote(np.ones(2)).support[0] == 0
    for i in range(70):  # grows past its first allocation
        mem.add(np.array([[1.0, 0.01 * i]]), [i % 5])
    vote = mem.vote(np.array([[0.0, 1.0]]))
    assert vote.support[0] == 0 and np.allclose(vote.probs, 0.2)
    mem.save(tmp_path / "k.safetensors")
    back = KNNMemory.load(tmp_path / "k.safetensors")
    assert len(back) == 70 and back.k == 4 and back.min_similarity == 0.9
    np.testing.assert_array_equal(back.labels, mem.labels)


def pred(probs, success=None, minutes=None, tokens=None):
    return Prediction(np.array(probs, float), None if success is None else np.array(success, float),
                      None if minutes is None else np.array(minutes, float),
                      None if tokens is None else np.array(tokens, float))


def test_utility_closed_form():
    cfg = PolicyConfig(time_cost_per_minute=0.01, token_cost_per_1k=0.1)
    p = pred([0.5, 0.3, 0.1, 0.05, 0.05], [0.6, 0.9, 0.5, 0.5, 0.5], [30, 5, 1, 1, 1], [2000, 1000, 0, 0, 0])
    expected = p.probs * p.success - 0.01 * p.minutes - 0.1 * p.tokens / 1000
    np.testing.assert_allclose(utilities(p, p.probs, cfg), expected)
    d = decide(M, p, "x", PolicyConfig(confidence_threshold=0.2, time_cost_per_minute=0.01, token_cost_per_1k=0.1),
               RuleSet())
    # a: .3-.3-.2=-.2, b: .27-.05-.1=.12 → b wins despite lower probability
    assert d.master == "b" and d.path == "model" and d.confidence == pytest.approx(0.3)
    assert d.expected_minutes == 5 and d.success_probability == pytest.approx(0.9)


def test_fallback_chain_rules_then_knn_then_default():
    rules = RuleSet.from_dict({"default_master": "e", "rules": [{"name": "r", "master": "c", "keywords": ["deploy"],
                                                                   "confidence": 0.7}]}, M)
    unsure = pred([0.3, 0.25, 0.15, 0.15, 0.15])
    cfg = PolicyConfig(confidence_threshold=0.5)
    d = decide(M, unsure, "please deploy", cfg, rules)
    assert (d.master, d.path, d.rule, d.confidence) == ("c", "rules", "r", 0.7)
    assert d.probabilities["a"] == pytest.approx(0.3)  # the model's view is still reported
    knn = np.array([0.1, 0.1, 0.1, 0.6, 0.1])
    assert decide(M, unsure, "nothing", cfg, rules, knn, knn_support=4).path == "knn"
    d = decide(M, unsure, "nothing", cfg, rules, knn, knn_support=0)
    assert (d.master, d.path) == ("e", "default") and d.confidence == pytest.approx(0.15)
    # the model failed: rules still route, the error is kept
    d = decide(M, None, "deploy now", cfg, rules, error="RuntimeError: boom")
    assert (d.master, d.path, d.error) == ("c", "rules", "RuntimeError: boom")
    assert decide(M, None, "x", cfg, rules).path == "default"


def test_knn_blend_reports_when_the_vote_tips_the_decision():
    p = pred([0.45, 0.40, 0.05, 0.05, 0.05])
    cfg = PolicyConfig(confidence_threshold=0.3, knn_weight=0.5)
    d = decide(M, p, "x", cfg, RuleSet(), np.array([0.0, 1.0, 0, 0, 0]), knn_support=3)
    assert d.master == "b" and d.path == "knn" and d.confidence == pytest.approx(0.7)
    d = decide(M, p, "x", cfg, RuleSet(), np.array([1.0, 0, 0, 0, 0]), knn_support=3)
    assert d.master == "a" and d.path == "model"


def test_policy_config_validates_every_field():
    with pytest.raises(ConfigError, match="confidence_threshold=1.5.*knn_k=0"):
        PolicyConfig(confidence_threshold=1.5, knn_k=0)
    with pytest.raises(ConfigError, match="Did you mean 'knn_weight'"):
        PolicyConfig.from_dict({"knn_wieght": 0.1})
