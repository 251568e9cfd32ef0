"""Choose hybrid fusion settings on tuning questions that the evaluation never sees.

``benchmarks/data/rag_tuning_queries.jsonl`` asks about symbols in modules that
``rag_queries.jsonl`` (scored by ``rag_eval.py``) does not touch (routing, corruption, collators,
hub sources/loading, generation). Each question's dense and BM25 candidate lists are computed once;
every fusion setting in the grid is then scored on them (mean of recall@5, MRR@10, nDCG@10). The
best setting is what :class:`cortex.retrieval.fusion.FusionConfig` ships as its default.

    python benchmarks/rag_tune.py [--index-dir DIR]

Prints one JSON line per setting (``"bench": "rag_tune"``), then one with ``"best": true``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rag_eval import HERE, metrics, open_repo_index, relevant  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(HERE.parent), help="repository to index (default: this one)")
    ap.add_argument("--queries", default=str(HERE / "data" / "rag_tuning_queries.jsonl"))
    ap.add_argument("--index-dir", default=None, help="keep the index here (shared with rag_eval.py --index-dir)")
    args = ap.parse_args()

    import torch

    from cortex.retrieval.fusion import FusionConfig

    torch.set_num_threads(1)
    queries = [json.loads(x) for x in Path(args.queries).read_text().splitlines() if x.strip()]
    tmp = None if args.index_dir else tempfile.TemporaryDirectory()
    index, _, _, _ = open_repo_index(Path(args.root), Path(args.index_dir or tmp.name) / "index", Path(args.queries))
    n_rel = [sum(relevant(c, q) for c in index.chunks.values()) for q in queries]
    missing = [q["symbol"] for q, n in zip(queries, n_rel) if n == 0]
    if missing:
        raise SystemExit(f"tuning questions whose answer is not in the index (renamed or moved?): {missing}")
    lists = []
    depth = 50  # what CodeIndex.search gives each list for k <= 12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for q in queries:
            d = [(h.chunk.id, h.score) for h in index.search(q["question"], k=depth, mode="dense", depth=depth).hits]
            b = [(h.chunk.id, h.score) for h in index.search(q["question"], k=depth, mode="bm25", depth=depth).hits]
            lists.append((d, b))

    def score(cfg: FusionConfig) -> dict[str, float]:
        per_q = []
        for q, n, (d, b) in zip(queries, n_rel, lists):
            fused = cfg.fuse(d, b)[:10]
            per_q.append(metrics([relevant(index.chunks[doc], q) for doc, _ in fused], n))
        out = {m: sum(p[m] for p in per_q) / len(per_q) for m in per_q[0]}
        out["objective"] = (out["recall@5"] + out["mrr@10"] + out["ndcg@10"]) / 3
        return out

    grid = [FusionConfig("rrf", w, k) for k in (10.0, 30.0, 60.0) for w in (0.3, 0.4, 0.5, 0.6, 0.7)]
    grid += [FusionConfig("score", w) for w in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
    rows = []
    for cfg in grid:
        r = score(cfg)
        rows.append((r["objective"], cfg, r))
        print(json.dumps({"bench": "rag_tune", "method": cfg.method, "bm25_weight": cfg.bm25_weight,
                          "rrf_k": cfg.rrf_k, **{k: round(v, 4) for k, v in r.items()}}))
    for name, lst in (("dense", 0), ("bm25", 1)):
        per_q = [metrics([relevant(index.chunks[doc], q) for doc, _ in ls[lst][:10]], n)
                 for q, n, ls in zip(queries, n_rel, lists)]
        print(json.dumps({"bench": "rag_tune", "method": name,
                          **{m: round(sum(p[m] for p in per_q) / len(per_q), 4) for m in per_q[0]}}))
    best = max(rows, key=lambda r: r[0])  # first best on ties (grid order)
    print(json.dumps({"bench": "rag_tune", "best": True, "questions": len(queries), "method": best[1].method,
                      "bm25_weight": best[1].bm25_weight, "rrf_k": best[1].rrf_k,
                      **{k: round(v, 4) for k, v in best[2].items()}}))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
