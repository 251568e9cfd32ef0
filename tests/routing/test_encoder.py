"""The serving text encoder: the same features as the tree's text root, traced or eager, fp32 or int8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cortex.errors import ConfigError, RoutingError
from cortex.routing.encoder import TextEncoder
from cortex.routing.features import encode_texts
from cortex.routing.model import TEXT_ROOT, RouterConfig, RouterModel
from cortex.routing.router import Router

from .conftest import MASTERS

# odd batch sizes and very different lengths, so padding and shape bugs show
TEXTS = [
    "deploy",
    "audit the password vault for injection flaws before the release goes out to the docker runners",
    "fix typo in readme",
    "refactor the class feature function bug implement today please team small project service",
    "etl schema",
    "cve",
    "write a tutorial guide for the wiki about the warehouse dashboard query table and the build pipeline",
]


@pytest.mark.parametrize("trace", [True, False])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_fp32_encoder_reproduces_the_tree_root(trained, trace, n):
    enc = TextEncoder(trained.model, trace=trace)
    assert enc.traced is trace and not enc.quantized
    got = enc(TEXTS[:n])
    ref = encode_texts(trained.model, TEXTS[:n])
    assert got.shape == ref.shape == (n, trained.model.text_dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)


def test_int8_encoder_is_close_and_leaves_the_tree_fp32(trained):
    before = {k: v.clone() for k, v in trained.model.tree.roots[TEXT_ROOT].state_dict().items()}
    enc = TextEncoder(trained.model, quantize=True)
    got, ref = enc(TEXTS), encode_texts(trained.model, TEXTS)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert enc.quantized and cos.min() > 0.95
    after = trained.model.tree.roots[TEXT_ROOT].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # quantization worked on a copy


def test_quantized_router_routes_and_saves_its_fp32_weights(trained, rules_yaml, tmp_path):
    from cortex.routing.policy import PolicyConfig
    from cortex.routing.rules import RuleSet

    r = Router(trained.model, PolicyConfig(confidence_threshold=0.4), RuleSet.load(rules_yaml, MASTERS), trained.knn)
    r.quantize()
    assert r.quantized and all(d.master in MASTERS for d in r.route_many(TEXTS))
    r.save(tmp_path / "q")
    back = Router.load(tmp_path / "q")
    assert not back.quantized
    np.testing.assert_allclose(back.encode(TEXTS), encode_texts(trained.model, TEXTS), atol=1e-5)


def test_feature_cache_is_lru(trained):
    r = Router(trained.model, cache_size=2, trace=False)
    r.features(["a task", "b task"])
    r.features(["a task"])  # a is now the most recent
    r.features(["c task"])  # evicts b, not a
    assert list(r._cache) == ["a task", "c task"]
    np.testing.assert_allclose(r.features(["c task"])[0], encode_texts(trained.model, ["c task"])[0], atol=1e-5)


def test_text_root_pooling_other_than_mean_is_refused(tiny_encoder):
    # the router defines its text features as layer means (text_layers); a root edited to pool
    # otherwise would be silently ignored, so it is refused up front
    cfg = RouterConfig(masters=[{"name": m, "description": ""} for m in MASTERS[:3]], text_source=str(tiny_encoder),
                       hidden_dim=13, branch_dim=11)
    cfg.tree["roots"][TEXT_ROOT]["pooling"] = "cls"
    with pytest.raises(ConfigError, match="pooling 'cls'"):
        RouterModel(cfg)
