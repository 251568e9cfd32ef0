"""Retrieval quality on this repository: BM25 vs dense vs hybrid on a labelled question set.

Each question in ``benchmarks/data/rag_queries.jsonl`` was written from the code and names the
file and the function (or class / method) that answers it. A retrieved chunk is relevant when it
is in that file and is that symbol (or a window of it, or the small class that contains it).
Prints one JSON line per mode: recall@5, MRR@10 and nDCG@10, with ratios against BM25. The hybrid
fusion settings are the library's defaults, chosen by ``rag_tune.py`` on separate tuning questions.

BM25 runs on ``bm25s`` since commit 057bcd2 measured it beside cortex's own sparse-matrix BM25
(``rag_eval.py --bm25-engines`` there): same top-10 on all 111 questions of both sets, scores equal
up to the constant ``k1 + 1``, queries 0.12 vs 0.34 ms, build 1.77 vs 1.70 s (both tokenise with
``code_tokens``) over 2,757 chunks, on a shared 2-core machine at load 14.

The embedding precision is measured side by side with ``--precision fp32,bf16`` (each its own
index; also ``int8-dynamic``): quality, index CPU seconds and the cosine between the vectors.

    python benchmarks/rag_eval.py [--root .] [--index-dir DIR] [--precision fp32,bf16]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402

HERE = Path(__file__).resolve().parent


def relevant(chunk, q) -> bool:
    if chunk.path != q["path"] or not chunk.name:
        return False
    sym = q["symbol"]
    return chunk.name == sym or sym.startswith(chunk.name + ".") or chunk.name.startswith(sym + ".")


def metrics(flags: list[bool], n_relevant: int) -> dict[str, float]:
    """recall@5 (any relevant in the top 5), reciprocal rank within 10, nDCG@10 with binary gains."""
    first = next((i for i, f in enumerate(flags[:10]) if f), None)
    dcg = sum(1 / math.log2(i + 2) for i, f in enumerate(flags[:10]) if f)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(max(n_relevant, 1), 10)))
    return {"recall@5": float(any(flags[:5])), "mrr@10": 0.0 if first is None else 1 / (first + 1),
            "ndcg@10": dcg / idcg}


def open_repo_index(root: Path, folder: Path, question_file: Path | None = None, embedder=None):
    """The repository's index in ``folder``, brought up to date → ``(index, update report, seconds, excludes)``.

    The question files (``benchmarks/data`` and ``question_file``) are left out: they would answer themselves.
    """
    from cortex.retrieval.files import DEFAULT_EXCLUDES
    from cortex.retrieval.index import CodeIndex

    index = CodeIndex.open(folder, embedder)
    root = root.resolve()
    excludes = list(DEFAULT_EXCLUDES)
    for path in (HERE / "data", question_file):
        if path is not None and root in Path(path).resolve().parents:
            excludes.append("/" + Path(path).resolve().relative_to(root).as_posix())
    t0 = time.perf_counter()
    report = index.update(root, excludes=excludes)
    return index, report, time.perf_counter() - t0, excludes


def make_embedder(precision: str, max_tokens: int = 256):
    """MiniLM at ``precision``: ``auto``/``fp32``/``bf16`` (the library's own), or ``int8-dynamic``
    (its Linear layers quantised by torch, a measured option that lost recall, not a library setting)."""
    import torch

    from cortex.retrieval.embedder import MiniLMEmbedder

    if precision != "int8-dynamic":
        return MiniLMEmbedder(precision=precision, max_tokens=max_tokens)
    embedder = MiniLMEmbedder(precision="fp32", max_tokens=max_tokens)
    embedder.id += "/int8-dynamic"  # other vectors than fp32: an index of one is not opened with the other
    embedder._model = torch.ao.quantization.quantize_dynamic(embedder._load_model(), {torch.nn.Linear},
                                                             dtype=torch.qint8)
    return embedder


def evaluate(index, queries: list[dict], n_rel: dict[int, int]) -> dict[str, dict[str, float]]:
    """recall@5 / MRR@10 / nDCG@10 and ms per query for each search mode, and whether the backend's
    dense top-10 equals exact search over the same vectors."""
    import numpy as np

    results = {}
    for mode in ("bm25", "dense", "hybrid"):
        per_q, t_total = [], 0.0
        for i, q in enumerate(queries):
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hits = index.search(q["question"], k=10, mode=mode).hits
            t_total += time.perf_counter() - t
            per_q.append(metrics([relevant(h.chunk, q) for h in hits], n_rel[i]))
        results[mode] = {m: sum(p[m] for p in per_q) / len(per_q) for m in per_q[0]}
        results[mode]["ms_per_query"] = 1000 * t_total / len(queries)
    ids = list(index.chunks)
    vecs = index.collection.vectors(ids)
    agree = 0
    for q in queries:
        qv = index.collection.embedder.embed_queries([q["question"]], warn=False).vectors[0]
        exact = [ids[i] for i in np.argsort(-(vecs @ qv), kind="stable")[:10]]
        agree += [n for n, _ in index.collection.search_vector(qv, 10)] == exact
    results["dense"]["backend_top10_equals_exact"] = agree / len(queries)
    return results


def vector_agreement(index, first) -> dict[str, float] | None:
    """Cosine between this index's chunk vectors and the first precision's (same chunk ids)."""
    if first is None:
        return None
    ids = sorted(set(index.chunks) & set(first.chunks))
    cos = (index.collection.vectors(ids) * first.collection.vectors(ids)).sum(1)
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def run_precision(args, precision: str, folder: Path, queries: list[dict], first):
    """Index the repository with MiniLM at ``precision`` and print one JSON line per search mode; returns the index."""
    from cortex.retrieval.files import DEFAULT_EXCLUDES

    embedder = make_embedder(precision, args.max_tokens)
    cpu0 = time.process_time()
    index, report, index_s, excludes = open_repo_index(Path(args.root), folder, Path(args.queries), embedder)
    index_cpu_s = time.process_time() - cpu0
    n_rel = {i: sum(relevant(c, q) for c in index.chunks.values()) for i, q in enumerate(queries)}
    missing = [q["symbol"] for i, q in enumerate(queries) if n_rel[i] == 0]
    if missing:
        raise SystemExit(f"questions whose answer is not in the index (renamed or moved?): {missing}")
    results = evaluate(index, queries, n_rel)
    base, info, agreement = results["bm25"], machine(), vector_agreement(index, first)
    for mode, r in results.items():
        print(json.dumps({
            "bench": "rag_eval", "mode": mode, "questions": len(queries), "split": Path(args.queries).name,
            "precision": precision, "bf16": getattr(embedder, "uses_bf16", False),
            **{k: round(v, 4) for k, v in r.items()},
            "vs_bm25": {m: round(r[m] / base[m], 3) if base[m] else None for m in ("recall@5", "mrr@10", "ndcg@10")},
            "vs_dense": {m: round(r[m] / results["dense"][m], 3) if results["dense"][m] else None
                         for m in ("recall@5", "mrr@10", "ndcg@10")},
            "chunks": len(index), "files": len(index.files), "index_seconds": round(index_s, 1),
            "chunks_embedded": report.chunks_embedded, "excluded": excludes[len(DEFAULT_EXCLUDES):],
            "index_stage_seconds": {k: round(v, 1) for k, v in report.stage_seconds.items()},
            "index_cpu_seconds": round(index_cpu_s, 1), "vector_cos_to_first_precision": agreement,
            "backend": index.collection.backend_name, "load_avg": os.getloadavg(),
            "embedder": index.collection.embedder.id,
            "fusion": vars(index.fusion) if mode == "hybrid" else None,
            **info,
        }), flush=True)
    return index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(HERE.parent), help="repository to index (default: this one)")
    ap.add_argument("--queries", default=str(HERE / "data" / "rag_queries.jsonl"))
    ap.add_argument("--index-dir", default=None, help="keep the index here (re-runs update it incrementally)")
    ap.add_argument("--precision", default="auto",
                    help="comma list of MiniLM precisions to index and evaluate side by side, each in its own "
                         "index: auto, fp32, bf16, int8-dynamic (e.g. fp32,bf16; the first is the reference "
                         "for the vector cosines)")
    ap.add_argument("--max-tokens", type=int, default=256,
                    help="MiniLM's token limit per chunk (256, its training length, is the library default)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)  # one intra-op thread: on a shared CPU, more threads slow single queries down
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    unknown = sorted(set(precisions) - {"auto", "fp32", "bf16", "int8-dynamic"})
    if unknown or not precisions:
        raise SystemExit(f"--precision {args.precision!r}: use auto, fp32, bf16 or int8-dynamic, comma separated")
    queries = [json.loads(x) for x in Path(args.queries).read_text().splitlines() if x.strip()]
    tmp = None if args.index_dir else tempfile.TemporaryDirectory()
    base = Path(args.index_dir or tmp.name)
    first = None
    for precision in precisions:
        folder = base / ("index" if len(precisions) == 1 else f"index-{precision}")
        index = run_precision(args, precision, folder, queries, first)
        first = first or index
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
