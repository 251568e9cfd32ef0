"""The servable Router: decisions, failure fallback, save/load through the registry, evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from cortex.errors import InputError, RoutingError
from cortex.hub.registry import Registry
from cortex.routing.evaluation import evaluate_router
from cortex.routing.loop import promote, register_router
from cortex.routing.policy import PolicyConfig
from cortex.routing.router import Router
from cortex.routing.rules import RuleSet

from .conftest import MASTERS


@pytest.fixture
def router(trained, rules_yaml):
    return Router(trained.model, PolicyConfig(confidence_threshold=0.4), RuleSet.load(rules_yaml, MASTERS), trained.knn)


def test_decision_fields(router):
    d = router.route("deploy the docker pipeline to the runner", {"priority": 3})
    assert d.master in MASTERS and d.path in ("model", "rules", "knn", "default")
    assert sum(d.probabilities.values()) == pytest.approx(1.0)
    assert 0 < d.success_probability < 1 and d.expected_minutes > 0 and d.expected_tokens > 0
    assert d.latency_ms > 0 and json.loads(json.dumps(d.to_dict()))["master"] == d.master
    with pytest.raises(InputError, match="empty"):
        router.route("   ")
    with pytest.raises(InputError, match="unknown keys"):
        router.route("x", {"bogus": 1})


def test_route_many_agrees_with_route(router, synthetic_frame):
    texts = synthetic_frame.text.iloc[300:311].tolist()
    many = router.route_many(texts)
    assert [d.master for d in many] == [router.route(t).master for t in texts]


def test_model_failure_falls_back_to_rules(router):
    broken = Router(router.model, router.policy, router.rules, None)
    broken.model = type(router.model)(router.model.config)  # a real model...
    broken.model.context.mean = torch.zeros(3)  # ...whose context root no longer fits its input
    d = broken.route("patch the exploit now")
    assert (d.master, d.path, d.rule) == ("security", "rules", "sec") and "RuntimeError" in d.error
    assert broken.route("nothing matches").path == "default"


def test_registry_round_trip_and_evaluation(router, synthetic_frame):
    reg = Registry()
    entry = register_router(router, name="tiny-router", registry=reg, train_frame=synthetic_frame.iloc[:300])
    promote(reg, "router", entry.name)
    assert reg.get("router:champion").kind == "router"
    back = Router.load("router:champion")
    texts = synthetic_frame.text.iloc[300:320].tolist()
    assert [d.master for d in back.route_many(texts)] == [d.master for d in router.route_many(texts)]
    assert back.rules.match("cve here").rule == "sec" and len(back.knn) == len(router.knn)
    assert Router.load(reg.path(entry.name), policy={"confidence_threshold": 0.9}).policy.confidence_threshold == 0.9
    rep = evaluate_router(back, synthetic_frame.iloc[300:], latency_n=7)
    assert rep.n == 100 and rep.latency_n == 7 and rep.p99_ms >= rep.p50_ms > 0
    assert rep.accuracy > 0.5 and 0 <= rep.ece <= 1 and 0.5 < rep.success_auroc <= 1
    assert sum(rep.paths.values()) == 100 and rep.fallback_rate == pytest.approx(1 - rep.paths.get("model", 0) / 100)
    assert rep.duration_mae > 0
    with pytest.raises(RoutingError, match="no .*router.json|not a router folder"):
        Router.load(reg.path(entry.name) / "tokenizer_text")
