"""A k-nearest-neighbour vote over embeddings of past decisions (semantic-router style).

The memory holds unit-norm text embeddings and the master each one went to. A query's top-``k``
neighbours by cosine similarity (those at least ``min_similarity``) vote with their similarity
as weight. The router keeps only *successful* past decisions, so the vote says "tasks like this one
went well with master m".
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cortex.errors import InputError, RoutingError


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


@dataclass
class KNNVote:
    """A vote for a batch of queries.

    Attributes:
        probs: ``(B, C)`` similarity-weighted share of neighbours per master (uniform when
            ``support`` is 0).
        support: ``(B,)`` neighbours that voted (similarity >= the memory's minimum).
        top_similarity: ``(B,)`` cosine similarity of the nearest neighbour (-1 when empty).
    """

    probs: np.ndarray
    support: np.ndarray
    top_similarity: np.ndarray


class KNNMemory:
    """Embeddings ``(N, D)`` with labels ``(N,)`` in ``[0, num_classes)``; grows with :meth:`add`.

    Args:
        dim: embedding width ``D``.
        num_classes: number of masters ``C``.
        k: neighbours consulted per query.
        min_similarity: neighbours below this cosine similarity do not vote.
    """

    def __init__(self, dim: int, num_classes: int, k: int = 10, min_similarity: float = 0.0):
        if k < 1:
            raise RoutingError(f"knn k={k} must be at least 1.")
        if not -1.0 <= min_similarity <= 1.0:
            raise RoutingError(f"knn min_similarity={min_similarity} must be in [-1, 1].")
        self.dim, self.num_classes, self.k, self.min_similarity = dim, num_classes, k, min_similarity
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._labels = np.zeros((0,), dtype=np.int64)
        self._n = 0
        self._lock = threading.Lock()  # the service adds feedback while other threads vote

    def __len__(self) -> int:
        return self._n

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self._n]

    @property
    def labels(self) -> np.ndarray:
        return self._labels[: self._n]

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Append ``(M, D)`` vectors (normalized here) with their ``(M,)`` labels."""
        v = l2_normalize(np.atleast_2d(vectors))
        y = np.atleast_1d(np.asarray(labels, dtype=np.int64))
        if v.shape[1] != self.dim or len(y) != len(v):
            raise InputError(f"knn add: expected (M, {self.dim}) vectors with M labels; got {v.shape} and {y.shape}.")
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise InputError(f"knn add: labels must be in [0, {self.num_classes}); got range [{y.min()}, {y.max()}].")
        with self._lock:
            need = self._n + len(v)
            if need > len(self._vectors):  # amortized growth: feedback arrives one decision at a time
                cap = max(need, 2 * len(self._vectors), 64)
                vectors = np.zeros((cap, self.dim), dtype=np.float32)
                labels = np.zeros((cap,), dtype=np.int64)
                vectors[: self._n], labels[: self._n] = self.vectors, self.labels
                self._vectors, self._labels = vectors, labels
            self._vectors[self._n:need] = v
            self._labels[self._n:need] = y
            self._n = need

    def vote(self, queries: np.ndarray) -> KNNVote:
        """Vote for ``(B, D)`` (or ``(D,)``) query embeddings; see :class:`KNNVote`."""
        q = l2_normalize(np.atleast_2d(queries))
        B, C = q.shape[0], self.num_classes
        if q.shape[1] != self.dim:
            raise InputError(f"knn vote: queries have width {q.shape[1]}, the memory {self.dim}.")
        with self._lock:
            vectors, labels = self.vectors, self.labels
        if len(labels) == 0:
            return KNNVote(np.full((B, C), 1.0 / C), np.zeros(B, dtype=np.int64), np.full(B, -1.0))
        # torch's matmul: numpy's BLAS here is ~20x slower for this (1, D) x (D, N) shape
        sims = (torch.from_numpy(q) @ torch.from_numpy(vectors).T).numpy()  # (B, N)
        k = min(self.k, len(labels))
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (B, k), unordered
        top_sims = np.take_along_axis(sims, top, axis=1)
        weights = np.where(top_sims >= self.min_similarity, np.maximum(top_sims, 1e-6), 0.0)
        probs = np.zeros((B, C))
        np.add.at(probs, (np.repeat(np.arange(B), k), labels[top].ravel()), weights.ravel())
        total = probs.sum(axis=1, keepdims=True)
        support = (weights > 0).sum(axis=1)
        probs = np.where(total > 0, probs / np.maximum(total, 1e-12), 1.0 / C)
        return KNNVote(probs=probs, support=support, top_similarity=top_sims.max(axis=1))

    def save(self, path: str | os.PathLike) -> None:
        """Write vectors, labels and settings as one safetensors file."""
        from safetensors.numpy import save_file

        save_file(
            {"vectors": np.ascontiguousarray(self.vectors), "labels": np.ascontiguousarray(self.labels)},
            str(path),
            metadata={"k": str(self.k), "min_similarity": repr(self.min_similarity), "num_classes": str(self.num_classes)},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KNNMemory":
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise RoutingError(f"kNN memory {str(p)!r} is missing; retrain the router or disable the kNN vote.")
        with safe_open(str(p), framework="numpy") as f:
            meta = f.metadata() or {}
            vectors, labels = f.get_tensor("vectors"), f.get_tensor("labels")
        mem = cls(vectors.shape[1], int(meta["num_classes"]), int(meta["k"]), float(meta["min_similarity"]))
        mem.add(vectors, labels)
        return mem
