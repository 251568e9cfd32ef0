"""The real router (packaged MiniLM text root) on a small stratified slice of the shared routing data."""

from __future__ import annotations

import numpy as np
import pytest

from cortex.routing.data import ingest_labeled
from cortex.routing.evaluation import evaluate_router
from cortex.routing.masters import load_masters
from cortex.routing.router import Router
from cortex.routing.rules import RuleSet
from cortex.routing.training import TrainConfig, train_router

from .conftest import CONFIGS


@pytest.mark.slow
def test_minilm_router_on_real_prompts(shared_data, tmp_path):
    masters = load_masters(CONFIGS / "masters.yaml")
    names = [m.name for m in masters]
    frame = ingest_labeled(shared_data / "routing" / "train.jsonl", text_field="prompt", label_field="master",
                           success_field="weak_correct", masters=names).frame
    # 40 prompts per master, seeded; 28 train / 12 test each (disjoint by construction)
    rng = np.random.default_rng(0)
    parts = [g.iloc[rng.permutation(len(g))[:40]] for _, g in frame.groupby("label")]
    train = frame.loc[np.concatenate([p.index[:28] for p in parts])]
    test = frame.loc[np.concatenate([p.index[28:] for p in parts])]
    res = train_router(train, masters, model_kwargs={"max_text_tokens": 64}, train=TrainConfig(max_epochs=60),
                       cache_root=str(tmp_path))
    router = Router(res.model, rules=RuleSet.load(CONFIGS / "rules.yaml", names), knn=res.knn)
    rep = evaluate_router(router, test, latency_n=5)
    assert rep.n == 84
    assert rep.model_accuracy > 0.5  # seven masters: chance is 1/7
    assert rep.success_auroc is not None and 0.0 <= rep.ece <= 1.0
