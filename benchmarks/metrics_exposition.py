"""The router's /metrics writer: cortex's own Prometheus text writer vs ``prometheus_client``, side by side.

Both hold the same six metrics (decisions by path and master, the latency histogram, model errors,
feedback, shadow agreement, the fallback-rate gauge)
and get the same stream of decisions; one JSON line per engine and round (rounds alternate, so a
load change on the shared machine hits both): microseconds per recorded decision and per render
of the exposition text. ``prometheus_client`` runs with its ``_created`` series off, so both
render the same series. The output of cortex's writer is checked by ``prometheus_client``'s own
parser in ``tests/routing/test_prometheus.py``.

    python benchmarks/metrics_exposition.py [--decisions 200000] [--renders 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class LibraryMetrics:
    """The same decision metrics on prometheus_client."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.decisions = Counter("cortex_router_decisions", "Routing decisions.", ("path", "master"), registry=self.registry)
        self.latency = Histogram("cortex_router_decision_latency_seconds", "Decision wall time.", buckets=BUCKETS,
                                 registry=self.registry)
        self.errors = Counter("cortex_router_model_errors", "Model failures.", registry=self.registry)
        self.feedback = Counter("cortex_router_feedback", "Feedback records.", ("outcome",), registry=self.registry)
        self.shadow = Counter("cortex_router_shadow", "Shadow comparisons.", ("agree",), registry=self.registry)
        self.fallback = Gauge("cortex_router_fallback_rate", "Share not decided by the model.", registry=self.registry)
        self.fallback.set_function(lambda: 0.0)

    def record_decision(self, path: str, master: str, seconds: float, error: bool = False) -> None:
        self.decisions.labels(path=path, master=master).inc()
        self.latency.observe(seconds)
        if error:
            self.errors.inc()

    def render(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decisions", type=int, default=200_000)
    ap.add_argument("--renders", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import prometheus_client

    from cortex.routing.prometheus import MetricsRegistry

    prometheus_client.disable_created_metrics()
    info = machine()
    for r in range(args.rounds):
        for name, make in (("cortex", MetricsRegistry), ("prometheus_client", LibraryMetrics)):
            m = make()
            t = time.perf_counter()
            for i in range(args.decisions):
                m.record_decision("model" if i % 3 else "rules", f"m{i % 7}", (i % 100) / 1000, error=i % 50 == 0)
            record_us = (time.perf_counter() - t) / args.decisions * 1e6
            t = time.perf_counter()
            for _ in range(args.renders):
                text = m.render()
            render_us = (time.perf_counter() - t) / args.renders * 1e6
            print(json.dumps({"bench": "metrics_exposition", "engine": name, "round": r,
                              "record_decision_us": round(record_us, 2), "render_us": round(render_us, 1),
                              "render_bytes": len(text), "prometheus_client": version("prometheus_client"),
                              "load_avg": os.getloadavg(), **info}))


if __name__ == "__main__":
    main()
