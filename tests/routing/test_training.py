"""Training loop: learns the synthetic structure, is seeded, caches text features, calibrates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cortex.errors import ConfigError
from cortex.routing.masters import Master
from cortex.routing.training import TrainConfig, stratified_split, train_router

from .conftest import MASTERS


def test_learns_and_calibrates(trained):
    v = trained.validation
    assert v["accuracy"] > 0.5  # five masters: chance is 0.2
    assert v["nll_after"] <= v["nll_before"] + 1e-9  # temperature scaling never raises held-out NLL
    assert trained.model.config.temperature_master == pytest.approx(v["temperature_master"])
    assert 1 <= trained.best_epoch <= v["epochs"] and len(trained.history) == v["epochs"]
    assert trained.model.config.outcomes == ["success", "duration", "tokens"]
    assert len(trained.knn) > 0 and not trained.model.training


def test_seeded_runs_are_identical_and_features_are_cached(tiny_encoder, synthetic_frame, tmp_path):
    frame = synthetic_frame.iloc[:120]
    kw = dict(text_source=str(tiny_encoder), model_kwargs={"hidden_dim": 13, "branch_dim": 11},
              train=TrainConfig(seed=3, max_epochs=5), cache_root=str(tmp_path))
    a = train_router(frame, [Master(m) for m in MASTERS], **kw)
    shards = sorted(tmp_path.rglob("shard-*.safetensors"))
    assert len(shards) == 1  # one shard of 120 texts
    b = train_router(frame, [Master(m) for m in MASTERS], **kw)
    assert sorted(tmp_path.rglob("shard-*.safetensors")) == shards  # nothing new to embed
    x, bags = torch.randn(4, 12), a.model.lexical_bags(frame["text"].iloc[:4].tolist())
    torch.testing.assert_close(a.model.predict(x, None, bags).probs, b.model.predict(x, None, bags).probs, rtol=0, atol=0,
                               check_dtype=False)
    assert a.val_task_ids == b.val_task_ids


def test_unfrozen_text_root_trains_through_the_encoder(tiny_encoder, synthetic_frame, tmp_path):
    res = train_router(synthetic_frame.iloc[:60], [Master(m) for m in MASTERS], text_source=str(tiny_encoder),
                       model_kwargs={"hidden_dim": 13, "branch_dim": 11, "freeze_text": False},
                       train=TrainConfig(max_epochs=2), cache_root=str(tmp_path))
    assert not list(tmp_path.rglob("shard-*"))  # a trained encoder's features are never cached
    root = res.model.tree.roots["text"].model
    assert any(p.requires_grad for p in root.parameters())


def test_stratified_split_and_config_validation():
    labels = np.array([0] * 50 + [1] * 20 + [2] * 2)
    tr, va = stratified_split(labels, 0.1, seed=1)
    assert not set(tr) & set(va) and len(tr) + len(va) == len(labels)
    assert np.bincount(labels[va], minlength=3).tolist() == [5, 2, 0]
    with pytest.raises(ConfigError, match="val_fraction=0.7.*|batch_size=0"):
        TrainConfig(batch_size=0, val_fraction=0.7)


def test_outcome_heads_need_enough_observations(tiny_encoder, synthetic_frame, tmp_path):
    frame = synthetic_frame.iloc[:120].copy()
    frame.loc[frame.index[3:], "minutes"] = float("nan")  # three durations only
    frame.loc[frame["outcome_master"] == "data", "tokens"] = float("nan")  # no token counts for 'data'
    res = train_router(frame, [Master(m) for m in MASTERS], text_source=str(tiny_encoder),
                       model_kwargs={"hidden_dim": 13, "branch_dim": 11}, train=TrainConfig(max_epochs=2),
                       cache_root=str(tmp_path))
    cfg = res.model.config
    assert cfg.outcomes == ["success", "tokens"] and "duration" not in res.model.tree.leaves
    assert cfg.observed["tokens"] == [m != "data" for m in MASTERS]
    pred = res.model.predict(torch.randn(3, 12), None, res.model.lexical_bags(["a", "b c", "d e f"]))
    assert pred.minutes is None and np.isnan(pred.tokens[:, MASTERS.index("data")]).all()
