"""cortex's Prometheus text writer, read back by prometheus_client's own exposition parser."""

from __future__ import annotations

import math

import pytest

from cortex.routing.prometheus import Counter, MetricsRegistry

parser = pytest.importorskip("prometheus_client.parser")


def families(text: str) -> dict:
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def test_metrics_text_parses_back_exactly():
    m = MetricsRegistry()
    odd = 'sec"ur\\ity\nteam'  # every character the format escapes in a label value
    m.record_decision("rules", odd, 0.003, error=True)
    m.record_decision("model", "qa", 0.02)
    m.record_decision("model", "qa", 7.0)
    m.feedback.inc(outcome="success")
    m.shadow.inc(agree="true")
    fams = families(m.render())
    assert {n: f.type for n, f in fams.items()} == {
        "cortex_router_decisions": "counter", "cortex_router_fallback_rate": "gauge",
        "cortex_router_decision_latency_seconds": "histogram", "cortex_router_feedback": "counter",
        "cortex_router_model_errors": "counter", "cortex_router_shadow": "counter"}
    decisions = {(s.labels["path"], s.labels["master"]): s.value for s in fams["cortex_router_decisions"].samples}
    assert decisions == {("rules", odd): 1, ("model", "qa"): 2}
    assert fams["cortex_router_fallback_rate"].samples[0].value == pytest.approx(1 / 3)
    hist = {(s.name, s.labels.get("le")): s.value for s in fams["cortex_router_decision_latency_seconds"].samples}
    assert hist[("cortex_router_decision_latency_seconds_bucket", "0.005")] == 1
    assert hist[("cortex_router_decision_latency_seconds_bucket", "0.025")] == 2
    assert hist[("cortex_router_decision_latency_seconds_bucket", "1.0")] == 2  # 7 s lands only in +Inf
    assert hist[("cortex_router_decision_latency_seconds_bucket", "+Inf")] == 3
    assert hist[("cortex_router_decision_latency_seconds_count", None)] == 3
    assert hist[("cortex_router_decision_latency_seconds_sum", None)] == pytest.approx(7.023)
    assert fams["cortex_router_model_errors"].samples[0].value == 1


def test_help_text_is_escaped_and_labels_are_checked():
    c = Counter("odd_total", "line one\nback\\slash", ("a",))
    c.inc(2.5, a="x")
    fam = families("\n".join(c.render()) + "\n")["odd"]
    assert fam.documentation == "line one\nback\\slash" and fam.samples[0].value == 2.5
    with pytest.raises(ValueError, match="takes labels"):
        c.inc(b="y")
    assert not math.isnan(c.value(a="x"))
