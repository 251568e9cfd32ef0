"""Vector search latency at 10k and 100k chunks: exact vs the embedded backend's IVF, and IVF recall@10.

Synthetic 384-d unit vectors with topic structure stand in for chunk embeddings at scale
(``cortex.retrieval.synthetic.clustered_vectors``); queries are held-out draws from the same
mixture. Two data sets: ``clustered`` (clear topics) and ``diffuse`` (noise twice as large as the
subtopic offsets, neighbourhoods blur). Single-threaded BLAS, one query at a time, as a router
worker would issue them. One JSON line per (n, data set), plus one for embedding a query with MiniLM.

    python benchmarks/rag_latency.py [--sizes 10000 100000] [--queries 300]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one core per query, fair for both
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402

DATASETS = {"clustered": dict(n_topics=200, n_sub=50, sub_scale=0.6, noise_scale=1.0),
            "diffuse": dict(n_topics=200, n_sub=50, sub_scale=0.6, noise_scale=2.0)}


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1000, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--dim", type=int, default=384)
    args = ap.parse_args()

    import torch

    from cortex.retrieval.backend import EmbeddedBackend, EmbeddedConfig
    from cortex.retrieval.synthetic import clustered_vectors

    torch.set_num_threads(1)
    info = {**machine(), "blas_threads": 1}
    for name, spec in DATASETS.items():
        for n in args.sizes:
            x = clustered_vectors(n + args.queries, args.dim, seed=7, **spec)
            data, queries = x[:n], x[n:]
            ids = [f"c{i}" for i in range(n)]
            # ann_threshold below n so the IVF is used at both sizes; the default switches at 20k
            backend = EmbeddedBackend(args.dim, EmbeddedConfig(ann_threshold=min(n, 5_000)))
            backend.upsert(ids, data)
            t = time.perf_counter()
            backend.refresh()
            build_s = time.perf_counter() - t
            for q in queries[:10]:  # warm caches
                backend.search(q, 10)
                backend.search(q, 10, exact=True)
            t_ivf, t_exact, hits = [], [], 0
            for q in queries:
                t = time.perf_counter()
                approx = backend.search(q, 10)
                t_ivf.append(time.perf_counter() - t)
                t = time.perf_counter()
                exact = backend.search(q, 10, exact=True)
                t_exact.append(time.perf_counter() - t)
                hits += len({i for i, _ in approx} & {i for i, _ in exact})
            nn_cos = float(np.mean([backend.search(q, 1, exact=True)[0][1] for q in queries[:50]]))
            print(json.dumps({
                "bench": "rag_latency", "data": name, "chunks": n, "dim": args.dim, "queries": len(queries),
                "exact_p50_ms": round(pct(t_exact, 50), 3), "exact_p95_ms": round(pct(t_exact, 95), 3),
                "ivf_p50_ms": round(pct(t_ivf, 50), 3), "ivf_p95_ms": round(pct(t_ivf, 95), 3),
                "ivf_recall@10": round(hits / (10 * len(queries)), 4),
                "speedup_p95_exact_over_ivf": round(pct(t_exact, 95) / pct(t_ivf, 95), 2),
                "nlist": int(backend._ivf.centroids.shape[0]), "nprobe": int(backend._ivf.nprobe),
                "calibrated_recall": round(backend.last_calibration[1], 4), "build_s": round(build_s, 2),
                "mean_top1_cosine": round(nn_cos, 3), "goal_p95_ms": 10.0, **spec, **info,
            }))

    from cortex.retrieval.embedder import MiniLMEmbedder

    emb = MiniLMEmbedder()
    qs = ["where are registry names validated", "how is the anomaly threshold chosen from validation errors",
          "atomic write of the index file", "split a python file into chunks by function"] * 10
    emb.embed(qs[:2], warn=False)
    times = []
    for q in qs:
        t = time.perf_counter()
        emb.embed([q], warn=False)
        times.append(time.perf_counter() - t)
    print(json.dumps({"bench": "rag_latency", "data": "query_embedding", "model": emb.id, "queries": len(qs),
                      "embed_p50_ms": round(pct(times, 50), 2), "embed_p95_ms": round(pct(times, 95), 2),
                      "note": "end-to-end dense query = embedding + search", **info}))


if __name__ == "__main__":
    main()
