"""The router's convex read-out: scikit-learn's logistic regression as the reference solver, the blend of
its probabilities with the tree's, and what a saved router keeps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cortex.errors import ConfigError
from cortex.routing.model import RouterConfig, RouterModel
from cortex.routing.training import TrainConfig, _fit_linear

from .conftest import MASTERS

TOPICS = [{"name": "t0", "master": MASTERS[1]}, {"name": "t1", "master": MASTERS[0]},
          {"name": "t2", "master": MASTERS[1]}]


def _config(tiny_encoder, **kw) -> RouterConfig:
    return RouterConfig(masters=[{"name": m, "description": ""} for m in MASTERS[:3]], text_source=str(tiny_encoder),
                        hidden_dim=13, branch_dim=11, lexical_buckets=0, outcomes=[], **kw)


def test_fit_linear_matches_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    y = (x[:, :3] @ torch.randn(3, 4, generator=g)).argmax(1)
    C = 0.5  # sklearn: C * sum(CE) + |W|^2 / 2  ==  n C (mean CE + |W|^2 / (2 n C))
    ref = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(x.numpy(), y.numpy())
    layer = torch.nn.Linear(6, 4)
    _fit_linear(layer, x, y, l2=1.0 / (2 * C * len(x)))
    # the softmax is invariant to a shift shared by every class: compare centred parameters
    centre = lambda a: a - a.mean(0, keepdims=True)
    np.testing.assert_allclose(centre(layer.weight.detach().numpy()), centre(ref.coef_), atol=2e-3)
    np.testing.assert_allclose(centre(layer.bias.detach().numpy()[:, None]), centre(ref.intercept_[:, None]), atol=2e-3)


def test_readout_blends_with_the_tree_and_sums_topics_per_master(tiny_encoder):
    model = RouterModel(_config(tiny_encoder, topics=TOPICS, readout=True)).eval()
    torch.nn.init.normal_(model.readout.weight)
    x = torch.randn(5, model.text_dim)
    tree = torch.softmax(model(text_features=x).master_logits, -1)  # weight 0: the tree alone
    std = (x - model.text_mean) / model.text_std
    p_topic = torch.softmax(model.readout(std), -1)
    p_read = torch.stack([p_topic[:, 1], p_topic[:, 0] + p_topic[:, 2], torch.zeros(5)], -1)
    for w in (0.3, 1.0):
        model.config.readout_weight = w
        got = torch.softmax(model(text_features=x).master_logits, -1)
        torch.testing.assert_close(got, (1 - w) * tree + w * p_read, atol=1e-5, rtol=1e-5)


def test_training_fits_the_readout_and_a_saved_router_keeps_it(tiny_encoder, synthetic_frame, tmp_path):
    from cortex.routing.masters import Master
    from cortex.routing.training import train_router

    res = train_router(synthetic_frame.iloc[:200], [Master(m) for m in MASTERS], text_source=str(tiny_encoder),
                       model_kwargs={"hidden_dim": 13, "branch_dim": 11, "lexical_buckets": 0},
                       train=TrainConfig(seed=0, max_epochs=15, stop_on="master", readout_weights=(0.5,)),
                       cache_root=str(tmp_path / "cache"))
    model, v = res.model, res.validation
    assert model.config.readout and model.config.readout_weight == 0.5
    assert v["readout_l2"] in TrainConfig().readout_l2 and set(v["readout_accuracy_by_l2"]) == {"0.0001", "0.001", "0.01"}
    assert model.readout.weight.abs().sum() > 0  # fitted, not left at its initial zeros
    model.save_pretrained(tmp_path / "router")
    again = RouterModel.from_pretrained(tmp_path / "router")
    assert again.config.readout_weight == 0.5
    x = torch.randn(4, model.text_dim)
    torch.testing.assert_close(again.predict(x).probs, model.predict(x).probs)


def test_a_saved_config_without_the_readout_field_has_none(tiny_encoder, tmp_path):
    model = RouterModel(_config(tiny_encoder, readout=False))
    model.save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("readout", "readout_weight"):  # as a router saved before the field existed
        cfg.pop(key)
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    assert RouterModel.from_pretrained(tmp_path / "old").readout is None


def test_bad_readout_settings_are_all_reported(tiny_encoder):
    with pytest.raises(ConfigError, match="readout_weight"):
        _config(tiny_encoder, readout_weight=1.5)
    with pytest.raises(ConfigError) as e:
        TrainConfig(readout_l2=(0.0,), readout_weights=(2.0,))
    assert "readout_l2" in str(e.value) and "readout_weights" in str(e.value)
