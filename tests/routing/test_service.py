"""The HTTP service: routes, survives bad input, records feedback, exposes Prometheus metrics."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

from cortex.routing.data import ingest_logs
from cortex.routing.loop import FeedbackLog, JsonlLog, ShadowRouter
from cortex.routing.policy import PolicyConfig
from cortex.routing.router import Router
from cortex.routing.rules import RuleSet
from cortex.routing.service import create_app

from .conftest import MASTERS


@pytest.fixture
def setup(trained, rules_yaml, tmp_path):
    router = Router(trained.model, PolicyConfig(confidence_threshold=0.4), RuleSet.load(rules_yaml, MASTERS),
                    trained.knn, name="champ")
    log = FeedbackLog(tmp_path / "feedback.jsonl")
    return router, log, TestClient(create_app(router, feedback_log=log, max_text_chars=500, max_body_bytes=4000))


def test_route_and_health(setup):
    _, _, client = setup
    r = client.post("/route", json={"title": "deploy the build", "task_type": "ops", "task_id": "t1",
                                    "context": {"priority": 2, "workers": {"cicd": {"queue_length": 4}}}})
    assert r.status_code == 200
    body = r.json()
    assert body["task_id"] == "t1" and body["master"] in MASTERS and body["router"] == "champ"
    assert set(body) >= {"probabilities", "confidence", "path", "latency_ms", "success_probability"}
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["decisions"] == 1 and h["masters"] == MASTERS


@pytest.mark.parametrize("payload, status", [
    ("{not json", 422),
    (json.dumps({"text": 5}), 422),
    (json.dumps({"text": "x", "extra": 1}), 422),
    (json.dumps({"text": "   "}), 422),
    (json.dumps({"text": "x" * 501}), 413),
    (json.dumps({"text": "x" * 3990}), 413),  # body over max_body_bytes
    (json.dumps({"text": "x", "context": {"workers": {"qa": {}}}}), 422),
    (json.dumps({"text": "x", "context": {"priority": "high"}}), 422),
])
def test_bad_input_never_500(setup, payload, status):
    _, _, client = setup
    r = client.post("/route", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text


def test_chunked_body_without_length_is_limited_too(setup):
    _, _, client = setup

    def chunks(text):  # a generator body is sent with transfer-encoding: chunked, no content-length
        body = json.dumps({"text": text}).encode()
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    headers = {"content-type": "application/json"}
    assert client.post("/route", content=chunks("x" * 3990), headers=headers).status_code == 413
    r = client.post("/route", content=chunks("deploy the build"), headers=headers)
    assert r.status_code == 200 and r.json()["master"] in MASTERS


def test_model_failure_is_routed_by_rules(setup, trained, tmp_path):
    router, log, _ = setup
    broken = Router(type(trained.model)(trained.model.config), router.policy, router.rules, None, name="broken")
    broken.model.context.mean = torch.zeros(2)  # a real failure inside the model
    client = TestClient(create_app(broken, feedback_log=log))
    r = client.post("/route", json={"text": "patch the exploit"})
    assert r.status_code == 200 and r.json()["path"] == "rules" and r.json()["error"]
    metrics = client.get("/metrics").text
    assert 'cortex_router_decisions_total{path="rules",master="security"} 1' in metrics
    assert "cortex_router_model_errors_total 1" in metrics and "cortex_router_fallback_rate 1" in metrics


def test_feedback_is_validated_and_logged_as_routing_logs(setup):
    router, log, client = setup
    d = client.post("/route", json={"title": "fix the readme typo", "description": "docs", "task_id": "t9"}).json()
    n_knn = len(router.knn)
    r = client.post("/feedback", json={"task_id": "t9", "success": True, "completion_time_minutes": 7.5,
                                       "tokens_used": 321})
    assert r.status_code == 200
    assert len(router.knn) == n_knn + 1  # a success joins the kNN memory at once
    assert client.post("/feedback", json={"task_id": "t9", "completion_time_minutes": -1}).status_code == 422
    assert client.post("/feedback", json={"task_id": "nope", "success": True}).status_code == 404
    r = client.post("/feedback", json={"task_id": "other", "success": False, "text": "run etl", "routed_to": "data",
                                       "user_corrected_to": "dev"})
    assert r.status_code == 200
    assert client.post("/feedback", json={"task_id": "z", "text": "x", "routed_to": "qa"}).status_code == 422
    rep = ingest_logs(log.path, masters=MASTERS)
    assert not rep.problems and len(rep.frame) == 2
    row = rep.frame.set_index("task_id").loc["t9"]
    assert row.outcome_master == d["master"] and row.minutes == 7.5 and row.tokens == 321 and row.success == 1
    assert row.text == "fix the readme typo\ndocs"
    assert rep.frame.set_index("task_id").loc["other"].label == "dev"
    text = client.get("/metrics").text
    assert 'cortex_router_feedback_total{outcome="success"} 1' in text
    assert 'cortex_router_feedback_total{outcome="corrected"} 1' in text
    assert "cortex_router_decision_latency_seconds_count 1" in text
    assert 'cortex_router_decision_latency_seconds_bucket{le="+Inf"} 1' in text


def test_shadow_mode_logs_both_decisions(trained, tmp_path):
    champ = Router(trained.model, name="champ")
    chall = Router(trained.model, PolicyConfig(confidence_threshold=0.99), name="chall")
    shadow = ShadowRouter(champ, chall, fraction=0.5, log=JsonlLog(tmp_path / "shadow.jsonl"))
    client = TestClient(create_app(shadow))
    picked = [i for i in range(40) if shadow.selected(f"task-{i}")]
    assert 10 <= len(picked) <= 30  # about half, deterministically
    for i in range(40):
        body = client.post("/route", json={"text": f"deploy build {i}", "task_id": f"task-{i}"}).json()
        assert body["router"] == "champ" and ("shadow" in body) == (i in picked)
    lines = [json.loads(x) for x in (tmp_path / "shadow.jsonl").read_text().splitlines()]
    assert [x["task_id"] for x in lines] == [f"task-{i}" for i in picked]
    assert all(x["champion"]["router"] == "champ" and x["challenger"]["router"] == "chall" for x in lines)
    assert "cortex_router_shadow_total" in client.get("/metrics").text
    canary = TestClient(create_app(ShadowRouter(champ, chall, fraction=1.0, serve_challenger=True)))
    assert canary.post("/route", json={"text": "deploy"}).json()["router"] == "chall"
    assert canary.post("/feedback", json={"task_id": "x"}).status_code == 503  # no feedback log configured


def test_micro_batcher_decides_like_single_calls(trained):
    from cortex.routing.context import request_context
    from cortex.routing.service import MicroBatcher

    router = Router(trained.model, knn=trained.knn)
    batcher = MicroBatcher(ShadowRouter(router), max_batch=4, max_wait_ms=50)
    texts = [f"deploy build {i} of the docker pipeline" for i in range(7)] + ["audit the cve"]
    futures = [batcher.submit(t, request_context(None, MASTERS), f"b{i}") for i, t in enumerate(texts)]
    got = [f.result(timeout=60)[0].master for f in futures]
    assert got == [router.route(t).master for t in texts]
