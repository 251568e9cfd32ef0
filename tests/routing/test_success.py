"""The success head: its features (leave-one-out neighbours, shrinkage), fitting, saving, serving."""

from __future__ import annotations

import numpy as np
import pytest

from cortex.routing.router import Router
from cortex.routing.success import FEATURES, OutcomeMemory, SuccessHead, SuccessModel, success_features, text_statistics


def _memory():
    # two masters; master 0's tasks near direction e0 all succeed, master 1's near e1 all fail
    text = np.array([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0, 1, 0.1]], np.float32)
    return OutcomeMemory.build(text, np.array([0, 0, 1, 1]), np.array([1.0, 1.0, 0.0, np.nan]),
                               np.array([0, 0, 1, -1]), 2)


def test_memory_keeps_known_outcomes_and_rates():
    mem = _memory()
    assert len(mem) == 3  # the row without an outcome is left out
    np.testing.assert_allclose(mem.base_rate, [1.0, 0.0])
    np.testing.assert_allclose(mem.topic_rate, [1.0, 1.0, 0.0])  # topic rates shrink toward their master's rate


def test_features_shrink_to_the_base_rate_and_leave_one_out():
    mem = _memory()
    stats = text_statistics(["a b", "c"], [2, 1])
    x = success_features(mem, np.array([[1, 0, 0], [0, 1, 0]], np.float32), 2, stats, k=3, shrink=2.0)
    assert x.shape == (2, 2, len(FEATURES))
    knn = x[..., FEATURES.index("knn_success")]
    assert knn[0, 0] == pytest.approx(1.0) and knn[1, 1] == pytest.approx(0.0)
    # query 0 has no master-1 neighbour with weight: the base rate of master 1
    assert x[0, 1, FEATURES.index("knn_support")] == pytest.approx(0.0)
    assert knn[0, 1] == pytest.approx(0.0)
    # leave-one-out: memory row 0 queried with itself excluded finds row 1 as nearest, not itself
    loo = success_features(mem, mem.vectors[:1], 2, stats[:1], k=1, exclude=np.array([0]))
    assert loo[0, 0, FEATURES.index("knn_top")] < 0.999


def test_head_learns_a_separable_feature_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(FEATURES))).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    head = SuccessHead().fit(x, y, epochs=200)
    p = head.predict(x)
    assert ((p > 0.5) == (y > 0.5)).mean() > 0.95
    model = SuccessModel(head, _memory())
    model.save(tmp_path / "s.safetensors")
    again = SuccessModel.load(tmp_path / "s.safetensors")
    text, stats = np.eye(3, dtype=np.float32)[:2], text_statistics(["a", "b"], [1, 1])
    np.testing.assert_allclose(again.predict(text, 2, stats), model.predict(text, 2, stats), atol=1e-3)


def test_trained_router_serves_and_saves_its_success_head(trained, tmp_path):
    assert trained.success is not None
    assert {"success_auroc_head", "success_auroc_lr_same_features"} <= set(trained.validation)
    router = Router(trained.model, knn=trained.knn, success=trained.success, trace=False)
    d = router.route("refactor the class and fix the bug")
    assert 0.0 <= d.success_probability <= 1.0
    router.save(tmp_path / "r")
    loaded = Router.load(tmp_path / "r", trace=False)
    assert loaded.success is not None
    assert loaded.route("refactor the class and fix the bug").success_probability == pytest.approx(
        d.success_probability, abs=1e-3)
