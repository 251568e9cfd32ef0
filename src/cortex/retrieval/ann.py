"""Nearest-neighbour search over unit vectors by inner product, on FAISS.

Small collections live in a flat (exact) FAISS index; large ones in an inverted-file index
(``IndexIVFFlat``: spherical k-means cells, a query scans the ``nprobe`` nearest cells). Both keep
their vectors under int64 labels chosen by the caller and remove them for real, and both rebuild
the stored vectors on request (the IVF through a hash-table direct map), so FAISS is the one store
of the vectors. ``nprobe`` is calibrated after training to reach a target recall@10 against exact
search on queries drawn near the data. ``benchmarks/rag_latency.py`` measured this against the
hand-written numpy IVF it replaced (see that script's docstring for the figures' commit).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _faiss() -> Any:
    """FAISS, imported on first use (opening an index for BM25 search does not need it)."""
    import faiss

    return faiss


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest ``scores`` (shape ``(n,)``), best first."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    return idx[np.argsort(-scores[idx], kind="stable")]


def default_nlist(n: int) -> int:
    """About ``2·sqrt(n)`` cells: ~160 vectors per cell at 100k, cheap k-means, short probe lists."""
    return max(1, int(round(2 * np.sqrt(n))))


def flat_index(dim: int) -> Any:
    """An empty exact inner-product index that keeps caller-chosen labels (and can rebuild vectors)."""
    faiss = _faiss()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def train_ivf(sample: np.ndarray, nlist: int, iters: int, seed: int) -> Any:
    """An empty ``IndexIVFFlat`` whose ``nlist`` cells are spherical k-means centroids of ``sample`` ``(S, D)``."""
    faiss = _faiss()
    dim = sample.shape[1]
    nlist = max(1, min(nlist, sample.shape[0]))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical, index.cp.niter, index.cp.seed = True, iters, seed
    index.cp.min_points_per_centroid = 1  # a small sample is our choice (train_per_cell), not a mistake to warn about
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    # a hash-table direct map: labels can be removed and vectors rebuilt without scanning every cell
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def clone_empty(index: Any) -> Any:
    """An empty copy of ``index`` with the same cells, probe count and direct map."""
    out = _faiss().clone_index(index)
    out.reset()
    return out


def n_cells(index: Any) -> int:
    """Cells of an IVF index; 0 for a flat one (so callers need no type checks)."""
    return int(getattr(index, "nlist", 0))


def search(index: Any, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ``(scores, labels)``, each ``(Q, k)``, of ``queries`` ``(Q, D)``; label -1 pads a short result.

    ``nprobe`` overrides the IVF's own probe count for this call (``n_cells(index)`` is exact).
    """
    faiss = _faiss()
    q = np.ascontiguousarray(queries, dtype=np.float32)
    params = faiss.SearchParametersIVF(nprobe=nprobe) if nprobe is not None and n_cells(index) else None
    return index.search(q, k, params=params)


def calibrate_nprobe(index: Any, vectors: np.ndarray, target_recall: float, k: int = 10,
                     n_queries: int = 200, seed: int = 0) -> tuple[int, float]:
    """Set the smallest ``nprobe`` whose recall@``k`` against exact search reaches ``target_recall``.

    Queries are stored ``vectors`` moved by Gaussian noise as large as a typical vector's distance
    to its own centroid, so they land near the data without being copies of it (a copy would find
    itself and flatter the recall). Returns ``(nprobe, recall reached)``.
    """
    rng = np.random.default_rng(seed)
    n, d = vectors.shape
    base = vectors[rng.choice(n, size=min(n_queries, n), replace=False)]
    centroids = index.quantizer.reconstruct_n(0, index.nlist)
    _, cell = index.quantizer.search(base, 1)
    sigma = float(np.median(np.linalg.norm(base - centroids[cell[:, 0]], axis=1))) / np.sqrt(d)
    q = base + rng.normal(0.0, max(sigma, 1e-3), size=base.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    truth = search(index, q, k, nprobe=index.nlist)[1]

    def recall(nprobe: int) -> float:
        found = search(index, q, k, nprobe=nprobe)[1]
        hits = sum(len(set(f.tolist()) & set(t.tolist()) - {-1}) for f, t in zip(found, truth))
        return hits / max(int((truth >= 0).sum()), 1)

    lo, hi = 0, 1
    r_hi = recall(hi)
    while r_hi < target_recall and hi < index.nlist:  # doubling, then bisection between the last two
        lo, hi = hi, min(2 * hi, index.nlist)
        r_hi = recall(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r_mid = recall(mid)
        if r_mid >= target_recall:
            hi, r_hi = mid, r_mid
        else:
            lo = mid
    index.nprobe = hi
    return hi, r_hi


def serialize(index: Any) -> bytes:
    """The index as bytes (FAISS's own format: vectors, labels, cells, ``nprobe``, direct map)."""
    return _faiss().serialize_index(index).tobytes()


def deserialize(data: bytes) -> Any:
    """An index from :func:`serialize` bytes."""
    return _faiss().deserialize_index(np.frombuffer(data, dtype=np.uint8))
