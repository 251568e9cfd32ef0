"""The vector backend protocol, and the embedded default that lives in a folder with no server.

An index keeps chunk texts and metadata itself and hands only ``(id, vector)`` pairs to a
:class:`VectorBackend`. The embedded backend searches exactly (one matrix-vector product) below
``ann_threshold`` vectors and through an IVF above it. A server vector database plugs in by
registering a factory under a name (:func:`register_backend`) and is chosen by that name when an
index is created; its :meth:`~VectorBackend.commit` makes writes durable on the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cortex.errors import ConfigError, RetrievalError
from cortex.retrieval._io import atomic_write, atomic_write_json, generation_name
from cortex.retrieval.ann import (
    IVFLayout,
    assign_cells,
    calibrate_nprobe,
    default_nlist,
    exact_search,
    sort_by_cell,
    spherical_kmeans,
    top_k,
)


@runtime_checkable
class VectorBackend(Protocol):
    """Where vectors live and are searched. Vectors are unit-norm; scores are inner products (cosine)."""

    dim: int

    def __len__(self) -> int:
        """Number of live vectors."""
        ...

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace ``vectors`` ``(N, dim)`` under ``ids``."""
        ...

    def delete(self, ids: Iterable[str]) -> None:
        """Remove ``ids`` (unknown ids are ignored)."""
        ...

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Top-``k`` ``(id, score)`` for ``query`` ``(dim,)``, best first."""
        ...

    def fetch(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors ``(len(ids), dim)`` for ``ids``."""
        ...

    def commit(self, folder: Path, generation: int) -> dict[str, Any]:
        """Make all writes durable; return the JSON state that :func:`open_backend` needs to reopen."""
        ...


@dataclass
class EmbeddedConfig:
    """Settings of the embedded backend.

    Args:
        ann_threshold: at or above this many vectors, search goes through an IVF instead of exactly.
        nlist: IVF cells (default ``2·sqrt(n)``).
        nprobe: cells probed per query (default: calibrated to ``target_recall``).
        target_recall: recall@10 against exact search that the calibrated ``nprobe`` must reach.
        kmeans_iters: Lloyd iterations of spherical k-means.
        train_per_cell: k-means trains on at most ``train_per_cell · nlist`` sampled vectors.
        seed: seed of sampling and k-means.
    """

    ann_threshold: int = 20_000
    nlist: int | None = None
    nprobe: int | None = None
    target_recall: float = 0.97
    kmeans_iters: int = 15
    train_per_cell: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("ann_threshold", "kmeans_iters", "train_per_cell"):
            if getattr(self, name) < 1:
                raise ConfigError(f"backend.{name}={getattr(self, name)} must be at least 1.")
        for name in ("nlist", "nprobe"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"backend.{name}={v} must be at least 1 (or unset for automatic).")
        if not 0.0 < self.target_recall <= 1.0:
            raise ConfigError(f"backend.target_recall={self.target_recall} must be in (0, 1].")


class EmbeddedBackend:
    """In-process vectors in a numpy array, persisted as ``.npy`` files in the index folder.

    Rows are append-only between rebuilds: a replaced or deleted id leaves a dead row (masked at
    search time) and new rows form an unsorted tail that is searched exactly next to the IVF cells.
    Before a search or a commit the layout is refreshed when it has gone stale: the tail is sorted
    into cells once it passes 5% of the data, and k-means is retrained once the data has doubled.
    """

    name = "embedded"

    def __init__(self, dim: int, config: EmbeddedConfig | None = None):
        self.dim = dim
        self.config = config or EmbeddedConfig()
        self._buf = np.zeros((0, dim), dtype=np.float32)  # capacity grows by doubling; rows [0, len(_ids)) used
        self._ids: list[str] = []
        self._alive = np.zeros(0, dtype=bool)
        self._pos: dict[str, int] = {}
        self._ivf: IVFLayout | None = None
        self.last_calibration: tuple[int, float] | None = None

    # ------------------------------------------------------------------ writes
    def __len__(self) -> int:
        return len(self._pos)

    def _check(self, vectors: np.ndarray, n: int) -> np.ndarray:
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape != (n, self.dim):
            raise RetrievalError(
                f"Vectors of shape {tuple(v.shape)} do not fit this backend: expected ({n}, {self.dim}) "
                "(one row per id, the embedder's width)."
            )
        if not np.isfinite(v).all():
            raise RetrievalError("Vectors contain NaN or inf; re-embed the texts (the encoder output is broken).")
        return v

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids = list(ids)
        v = self._check(vectors, len(ids))
        if len(set(ids)) != len(ids):
            raise RetrievalError("Duplicate ids in one upsert; pass each id once.")
        self.delete(ids)
        start, end = len(self._ids), len(self._ids) + len(ids)
        if end > self._buf.shape[0]:
            cap = max(end, 2 * self._buf.shape[0])
            grown = np.empty((cap, self.dim), dtype=np.float32)
            grown[:start] = self._buf[:start]
            self._buf = grown
            alive = np.zeros(cap, dtype=bool)
            alive[:start] = self._alive[:start]
            self._alive = alive
        self._buf[start:end] = v
        self._alive[start:end] = True
        self._ids.extend(ids)
        self._pos.update({i: start + j for j, i in enumerate(ids)})

    def delete(self, ids: Iterable[str]) -> None:
        for i in ids:
            row = self._pos.pop(i, None)
            if row is not None:
                self._alive[row] = False

    # ------------------------------------------------------------------ layout
    @property
    def uses_ivf(self) -> bool:
        """Whether searches go through the IVF (at or above ``ann_threshold`` live vectors)."""
        return len(self) >= self.config.ann_threshold

    @property
    def _vecs(self) -> np.ndarray:
        """The used rows ``(rows, dim)``, dead ones included."""
        return self._buf[: len(self._ids)]

    def _compact(self, order: np.ndarray | None = None) -> None:
        keep = np.flatnonzero(self._alive[: len(self._ids)]) if order is None else order
        self._buf = np.ascontiguousarray(self._buf[keep])
        self._ids = [self._ids[r] for r in keep]
        self._alive = np.ones(len(self._ids), dtype=bool)
        self._pos = {i: r for r, i in enumerate(self._ids)}

    def _stale(self) -> bool:
        n_rows, n_live = len(self._ids), len(self)
        if not self.uses_ivf:
            return self._ivf is not None or n_rows - n_live > 0.2 * max(n_rows, 1)
        if self._ivf is None or n_live > 2 * self._ivf.n_trained or n_rows - n_live > 0.2 * n_rows:
            return True
        tail = n_rows - self._ivf.n_sorted
        return tail > max(1024, 0.05 * n_rows)

    def _retrain(self) -> None:
        cfg = self.config
        self._compact()
        n = len(self._ids)
        nlist = min(cfg.nlist or default_nlist(n), n)
        rng = np.random.default_rng(cfg.seed)
        sample = self._vecs[rng.choice(n, size=min(n, cfg.train_per_cell * nlist), replace=False)]
        centroids = spherical_kmeans(sample, nlist, iters=cfg.kmeans_iters, seed=cfg.seed)
        self._relayout(centroids, n_trained=n)

    def _relayout(self, centroids: np.ndarray, n_trained: int) -> None:
        """Sort live rows into the cells of ``centroids``; calibrate ``nprobe`` only for new centroids."""
        self._compact()
        cells = assign_cells(self._vecs, centroids)
        order, offsets = sort_by_cell(cells, centroids.shape[0])
        self._compact(order)
        cells = cells[order]
        previous = self._ivf.nprobe if self._ivf is not None and self._ivf.centroids is centroids else None
        self._ivf = IVFLayout(centroids, offsets, nprobe=1, n_trained=n_trained)
        if self.config.nprobe is not None:
            self._ivf.nprobe = self.config.nprobe
        elif previous is not None:  # same cells, a few more rows: the calibrated probe count still holds
            self._ivf.nprobe = previous
        else:
            self._ivf.nprobe, reached = calibrate_nprobe(
                self._vecs, self._ivf, cells, self.config.target_recall, seed=self.config.seed
            )
            self.last_calibration = (self._ivf.nprobe, reached)

    def refresh(self) -> None:
        """Bring the layout up to date now (else it happens at the next search or commit)."""
        if not self._stale():
            return
        if not self.uses_ivf:
            self._ivf = None
            self._compact()
        elif self._ivf is None or len(self) > 2 * self._ivf.n_trained or len(self._ids) - len(self) > 0.2 * len(self._ids):
            self._retrain()
        else:
            self._relayout(self._ivf.centroids, self._ivf.n_trained)

    # ------------------------------------------------------------------ reads
    def _masked(self, rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        live = self._alive[rows]
        return rows[live], scores[live]

    def search(self, query: np.ndarray, k: int, exact: bool = False) -> list[tuple[str, float]]:
        """Top-``k`` ``(id, cosine)``; ``exact=True`` bypasses the IVF (for measuring its recall)."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise RetrievalError(f"Query vector has {q.shape[0]} dims; this index holds {self.dim}-dim vectors.")
        if k < 1 or not self._ids:
            return []
        self.refresh()
        n_dead = len(self._ids) - len(self)
        fetch = k + n_dead  # dead rows may take top places; fetch enough to still return k live ones
        if exact or self._ivf is None:
            rows, scores = exact_search(self._vecs, q, fetch)
        else:
            rows, scores = self._ivf.search(self._vecs, q, fetch)
            tail = self._ivf.n_sorted
            if tail < len(self._ids):
                t_rows, t_scores = exact_search(self._vecs[tail:], q, fetch)
                rows, scores = np.concatenate([rows, t_rows + tail]), np.concatenate([scores, t_scores])
                best = top_k(scores, fetch)
                rows, scores = rows[best], scores[best]
        if n_dead:
            rows, scores = self._masked(rows, scores)
        return [(self._ids[r], float(s)) for r, s in zip(rows[:k], scores[:k])]

    def fetch(self, ids: Sequence[str]) -> np.ndarray:
        missing = [i for i in ids if i not in self._pos]
        if missing:
            raise RetrievalError(f"No vectors for ids {missing[:5]}; they were deleted or never added.")
        return self._vecs[[self._pos[i] for i in ids]]

    def ids(self) -> list[str]:
        """Live ids in storage order."""
        return [i for i, a in zip(self._ids, self._alive[: len(self._ids)]) if a]

    # ------------------------------------------------------------------ persistence
    def commit(self, folder: Path, generation: int) -> dict[str, Any]:
        self.refresh()
        if len(self._ids) != len(self):
            self._compact() if self._ivf is None else self._relayout(self._ivf.centroids, self._ivf.n_trained)
        folder = Path(folder)
        files = {"vectors": generation_name("vectors", generation, "npy"),
                 "ids": generation_name("ids", generation, "json")}
        atomic_write(folder / files["vectors"], lambda f: np.save(f, self._vecs, allow_pickle=False))
        atomic_write_json(folder / files["ids"], self._ids)
        state: dict[str, Any] = {"name": self.name, "dim": self.dim, "count": len(self), "files": files,
                                 "config": asdict(self.config)}
        if self._ivf is not None:
            files["ivf"] = generation_name("ivf", generation, "npz")
            ivf = self._ivf
            atomic_write(folder / files["ivf"], lambda f: np.savez(
                f, centroids=ivf.centroids, offsets=ivf.offsets, nprobe=np.int64(ivf.nprobe),
                n_trained=np.int64(ivf.n_trained)))
        return state

    @classmethod
    def open(cls, folder: Path, state: dict[str, Any] | None, dim: int,
             config: EmbeddedConfig | None = None) -> "EmbeddedBackend":
        """Reopen from a committed ``state`` (or start empty when ``state`` is None)."""
        if state is None:
            return cls(dim, config)
        cfg = config or EmbeddedConfig(**state.get("config", {}))
        backend = cls(dim, cfg)
        files = state["files"]
        try:
            vecs = np.load(Path(folder) / files["vectors"], allow_pickle=False)
            ids = json.loads((Path(folder) / files["ids"]).read_text(encoding="utf-8"))
            ivf = None
            if "ivf" in files:
                with np.load(Path(folder) / files["ivf"], allow_pickle=False) as z:
                    ivf = IVFLayout(z["centroids"], z["offsets"], int(z["nprobe"]), int(z["n_trained"]))
        except (OSError, ValueError, KeyError) as e:
            raise RetrievalError(
                f"The vector files of the index in {str(folder)!r} are missing or corrupt ({e}). "
                "Rebuild the index with: cortex rag index PATH --rebuild"
            ) from e
        if vecs.shape != (len(ids), dim):
            raise RetrievalError(
                f"The index in {str(folder)!r} has {vecs.shape} vectors for {len(ids)} ids of width {dim}. "
                "Rebuild it with: cortex rag index PATH --rebuild"
            )
        backend._buf, backend._ids = np.ascontiguousarray(vecs, dtype=np.float32), ids
        backend._alive = np.ones(len(ids), dtype=bool)
        backend._pos = {i: r for r, i in enumerate(ids)}
        if ivf is not None and config is not None and config.nprobe is not None:
            ivf.nprobe = config.nprobe
        backend._ivf = ivf
        return backend


BackendFactory = Callable[[Path, "dict[str, Any] | None", int], VectorBackend]
BACKENDS: dict[str, BackendFactory] = {"embedded": lambda folder, state, dim: EmbeddedBackend.open(folder, state, dim)}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``factory(folder, state_or_None, dim) -> VectorBackend`` available as backend ``name``."""
    BACKENDS[name] = factory


def open_backend(name: str, folder: Path, state: dict[str, Any] | None, dim: int) -> VectorBackend:
    """The backend ``name`` reopened from ``state`` (or new when ``state`` is None)."""
    if name not in BACKENDS:
        raise ConfigError.bad_choice("backend", name, BACKENDS)
    return BACKENDS[name](folder, state, dim)
