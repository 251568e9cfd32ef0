"""Nearest-neighbour search over unit vectors by inner product: exact, and an inverted-file (IVF) index.

IVF: spherical k-means cuts the vectors into ``nlist`` cells; the vectors are stored sorted by cell
so a cell is one contiguous slice; a query scores the ``nprobe`` nearest centroids and then only
the vectors in those cells. ``nprobe`` is calibrated after training to reach a target recall@10
against exact search on queries drawn near the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest ``scores`` (shape ``(n,)``), best first."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    return idx[np.argsort(-scores[idx], kind="stable")]


def exact_search(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` rows of ``vectors`` ``(N, D)`` by inner product with ``query`` ``(D,)``."""
    scores = vectors @ query
    idx = top_k(scores, k)
    return idx, scores[idx]


def spherical_kmeans(x: np.ndarray, k: int, iters: int = 15, seed: int = 0) -> np.ndarray:
    """``k`` unit-norm centroids ``(k, D)`` of unit rows ``x`` ``(N, D)`` (assignment by inner product).

    Starts from ``k`` distinct random rows; a cell that empties is re-seeded with the row its
    centroid fits worst, so all ``k`` cells stay in use.
    """
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    k = min(k, n)
    centroids = x[rng.choice(n, size=k, replace=False)].copy()
    for _ in range(iters):
        sims = x @ centroids.T  # (N, k)
        assign = sims.argmax(1)
        best = sims[np.arange(n), assign]
        # (k, N) one-hot times (N, D): cell sums without a Python loop or slow np.add.at
        onehot = sparse.csr_matrix((np.ones(n, dtype=x.dtype), (assign, np.arange(n))), shape=(k, n))
        sums = np.asarray(onehot @ x)
        counts = np.bincount(assign, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            worst = np.argsort(best)[: empty.size]
            sums[empty] = x[worst]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = (sums / np.maximum(norms, 1e-12)).astype(x.dtype)
    return centroids


def assign_cells(x: np.ndarray, centroids: np.ndarray, block: int = 16384) -> np.ndarray:
    """Nearest centroid of each row of ``x`` ``(N, D)`` → ``(N,)`` int64, in blocks to bound memory."""
    out = np.empty(x.shape[0], dtype=np.int64)
    for s in range(0, x.shape[0], block):
        out[s : s + block] = (x[s : s + block] @ centroids.T).argmax(1)
    return out


@dataclass
class IVFLayout:
    """An IVF over the first ``offsets[-1]`` rows of a vector array sorted by cell.

    Attributes:
        centroids: ``(L, D)`` unit-norm cell centres.
        offsets: ``(L + 1,)`` cell ``c`` holds rows ``offsets[c]:offsets[c + 1]``.
        nprobe: cells scored per query.
        n_trained: how many vectors existed when the centroids were trained (retrain when doubled).
    """

    centroids: np.ndarray
    offsets: np.ndarray
    nprobe: int
    n_trained: int

    @property
    def n_sorted(self) -> int:
        return int(self.offsets[-1])

    def search(self, vectors: np.ndarray, query: np.ndarray, k: int, nprobe: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` rows among the sorted rows of ``vectors`` → (row indices, scores)."""
        nprobe = min(nprobe or self.nprobe, self.centroids.shape[0])
        cells = top_k(self.centroids @ query, nprobe)
        rows, scores = [], []
        for c in cells:
            a, b = self.offsets[c], self.offsets[c + 1]
            if b > a:
                scores.append(vectors[a:b] @ query)
                rows.append(np.arange(a, b))
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        s = np.concatenate(scores)
        r = np.concatenate(rows)
        idx = top_k(s, k)
        return r[idx], s[idx]


def default_nlist(n: int) -> int:
    """About ``2·sqrt(n)`` cells: ~160 vectors per cell at 100k, cheap k-means, short probe lists."""
    return max(1, int(round(2 * np.sqrt(n))))


def sort_by_cell(cells: np.ndarray, nlist: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable order that groups rows by cell, and the ``(nlist + 1,)`` cell offsets in that order."""
    order = np.argsort(cells, kind="stable")
    offsets = np.zeros(nlist + 1, dtype=np.int64)
    np.cumsum(np.bincount(cells, minlength=nlist), out=offsets[1:])
    return order, offsets


def calibrate_nprobe(vectors: np.ndarray, layout: IVFLayout, cells: np.ndarray, target_recall: float,
                     k: int = 10, n_queries: int = 200, seed: int = 0) -> tuple[int, float]:
    """Smallest ``nprobe`` whose recall@``k`` against exact search reaches ``target_recall``.

    Queries are stored vectors moved by Gaussian noise as large as a typical vector's distance to
    its own centroid, so they land near the data without being copies of it (a copy would find
    itself and flatter the recall). ``vectors`` must be the sorted rows; ``cells`` their cell ids.
    Returns ``(nprobe, recall reached)``.
    """
    rng = np.random.default_rng(seed)
    n, d = vectors.shape
    pick = rng.choice(n, size=min(n_queries, n), replace=False)
    base = vectors[pick]
    residual = np.linalg.norm(base - layout.centroids[cells[pick]], axis=1)
    sigma = float(np.median(residual)) / np.sqrt(d)
    q = base + rng.normal(0.0, max(sigma, 1e-3), size=base.shape).astype(vectors.dtype)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    truth = [set(top_k(vectors @ qi, k).tolist()) for qi in q]

    def recall(nprobe: int) -> float:
        hits = sum(len(truth[i] & set(layout.search(vectors, qi, k, nprobe)[0].tolist())) for i, qi in enumerate(q))
        return hits / sum(len(t) for t in truth)

    nlist = layout.centroids.shape[0]
    lo, hi = 0, 1
    r_hi = recall(hi)
    while r_hi < target_recall and hi < nlist:  # doubling, then bisection between the last two
        lo, hi = hi, min(2 * hi, nlist)
        r_hi = recall(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r_mid = recall(mid)
        if r_mid >= target_recall:
            hi, r_hi = mid, r_mid
        else:
            lo = mid
    return hi, r_hi
