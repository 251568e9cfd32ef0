"""Learning loop: promotion rule, champion/challenger/archive aliases with lineage, rollback, retrain."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cortex.errors import DataError, RoutingError
from cortex.hub.registry import Registry
from cortex.routing.data import ingest_logs
from cortex.routing.evaluation import EvalReport
from cortex.routing.loop import PromotionRule, current, promote, recent_window, register_router, retrain, rollback
from cortex.routing.router import Router
from cortex.routing.training import TrainConfig

from .conftest import MASTERS, synthetic_logs, write_jsonl


def report(**kw):
    base = dict(n=100, accuracy=0.8, macro_f1=0.7, ece=0.05, success_auroc=0.7, fallback_rate=0.1, p50_ms=1.0,
                p99_ms=2.0, duration_mae=10.0)
    return EvalReport(**{**base, **kw})


def test_promotion_rule():
    rule = PromotionRule(margin=0.02)
    assert rule.decide(report(), report(macro_f1=0.73))[0]
    ok, why = rule.decide(report(), report(macro_f1=0.71))
    assert not ok and "less than the margin" in why[0]
    ok, why = rule.decide(report(), report(macro_f1=0.8, ece=0.1))
    assert not ok and "ece got worse" in why[1]
    ok, why = rule.decide(report(), report(macro_f1=0.8, duration_mae=12.0))
    assert not ok and "duration_mae" in why[1]
    assert rule.decide(report(success_auroc=math.nan), report(macro_f1=0.8, success_auroc=0.1))[0]  # NaN: not compared
    assert PromotionRule(primary="duration_mae", margin=0.1).decide(report(), report(duration_mae=8.0))[0]


def test_aliases_lineage_and_rollback(trained):
    reg = Registry()
    r = Router(trained.model, knn=trained.knn)
    a = register_router(r, name="r-a", registry=reg)
    promote(reg, "router", a.name)
    b = register_router(r, name="r-b", registry=reg, parents=[a.name])
    reg.set_alias("router:challenger", b.name)
    promote(reg, "router", b.name)
    c = register_router(r, name="r-c", registry=reg, parents=[b.name])
    promote(reg, "router", c.name)
    assert (current(reg, "router", "champion"), current(reg, "router", "archive")) == ("r-c", "r-b")
    assert current(reg, "router", "challenger") is None  # b was promoted
    assert reg.get("r-c").parents == ["r-b"] and reg.get("r-c").extra["previous_champion"] == "r-b"
    out = rollback(reg)
    assert out == {"champion": "r-b", "archive": "r-a", "rolled_back": "r-c"}
    assert current(reg, "router", "challenger") == "r-c" and "rolled_back_at" in reg.get("r-c").extra
    rollback(reg)
    assert current(reg, "router", "champion") == "r-a" and current(reg, "router", "archive") is None
    with pytest.raises(RoutingError, match="no archived champion"):
        rollback(reg)


def test_recent_window_uses_time_then_order(synthetic_frame):
    f = synthetic_frame.iloc[:50].copy()
    f["timestamp"] = f["timestamp"].to_numpy()[::-1]  # newest first in the file
    older, window = recent_window(f, 0.2, 5)
    assert len(window) == 10 and window.timestamp.min() > older.timestamp.max()
    with pytest.raises(DataError, match="at least"):
        recent_window(f.iloc[:12], 0.2, 10)


def test_retrain_registers_a_challenger_and_promotes_only_a_better_one(trained, synthetic_frame, tmp_path):
    reg = Registry()
    weak = Router(trained.model, knn=trained.knn)
    # a champion trained on 300 records; new logs come from the same process, so the challenger
    # (trained on more data) must at least not be worse; an impossible margin must block promotion
    champ = register_router(weak, name="champ", registry=reg, train_frame=synthetic_frame.iloc[:300])
    promote(reg, "router", champ.name)
    new = ingest_logs(write_jsonl(tmp_path / "new.jsonl", synthetic_logs(150, seed=9, start=1.9e9)),
                      masters=MASTERS).frame
    rep = retrain(new, registry=reg, rule=PromotionRule(margin=1.5), train=TrainConfig(max_epochs=40),
                  min_window=30)
    assert not rep.promoted and rep.n_window == 30 and rep.n_train == 300 + 120
    assert current(reg, "router", "champion") == "champ"
    assert current(reg, "router", "challenger") == rep.challenger
    entry = reg.get(rep.challenger)
    assert entry.kind == "router" and entry.parents[-1] == "champ" and entry.extra["built_from"] == "champ"
    assert set(rep.challenger_metrics) >= {"accuracy", "macro_f1", "ece", "success_auroc", "duration_mae"}
    rep2 = retrain(new, registry=reg, rule=PromotionRule(margin=-1.0, ece_tolerance=1.0, auroc_tolerance=1.0,
                                                         mae_tolerance=10.0),
                   train=TrainConfig(max_epochs=5), min_window=30)
    assert rep2.promoted and current(reg, "router", "champion") == rep2.challenger
    assert current(reg, "router", "archive") == "champ"
    assert np.isfinite(rep2.champion_metrics["accuracy"])
