"""The vector backend protocol, and the embedded default that lives in a folder with no server.

An index keeps chunk texts and metadata itself and hands only ``(id, vector)`` pairs to a
:class:`VectorBackend`. The embedded backend runs in-process on FAISS: exact search below
``ann_threshold`` vectors, an IVF above it. A server vector database plugs in by registering a
factory under a name (:func:`register_backend`) and is chosen by that name when an index is
created (``cortex.retrieval.chroma`` registers ``chroma``); its :meth:`~VectorBackend.commit`
makes writes durable on the server. A backend whose writes outlive the writing process (a server)
may also offer ``held(ids) -> {id: vector}`` for uncommitted ids it still holds, so an interrupted
index update resumes without embedding them again.
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
from cortex.retrieval import ann


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
        ann_threshold: at or above this many vectors, search goes through a FAISS IVF instead of exactly.
        nlist: IVF cells (default ``2·sqrt(n)``).
        nprobe: cells probed per query (default: calibrated to ``target_recall``).
        target_recall: recall@10 against exact search that the calibrated ``nprobe`` must reach.
        kmeans_iters: iterations of spherical k-means.
        train_per_cell: k-means trains on at most ``train_per_cell · nlist`` sampled vectors.
        seed: seed of sampling and k-means.
    """

    ann_threshold: int = 20_000
    nlist: int | None = None
    nprobe: int | None = None
    target_recall: float = 0.97
    kmeans_iters: int = 15
    train_per_cell: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [f"backend.{name}={getattr(self, name)} must be at least 1."
                    for name in ("ann_threshold", "kmeans_iters", "train_per_cell") if getattr(self, name) < 1]
        problems += [f"backend.{name}={getattr(self, name)} must be at least 1 (or unset for automatic)."
                     for name in ("nlist", "nprobe") if getattr(self, name) is not None and getattr(self, name) < 1]
        if not 0.0 < self.target_recall <= 1.0:
            problems.append(f"backend.target_recall={self.target_recall} must be in (0, 1].")
        if problems:
            raise ConfigError(" ".join(problems))


class EmbeddedBackend:
    """In-process vectors in a FAISS index, persisted as one ``.faiss`` file plus the ids in the index folder.

    Every vector sits under an int64 label (its position in ``_labels``); a deleted id frees its
    label for good, so labels only grow until the next rebuild renumbers them. Before a search or a
    commit the index is brought in line with its size: exact (flat) below ``ann_threshold``, an IVF
    at or above it, retrained once the data has doubled since training, and renumbered once more
    than a fifth of the labels are dead.
    """

    name = "embedded"

    def __init__(self, dim: int, config: EmbeddedConfig | None = None):
        self.dim = dim
        self.config = config or EmbeddedConfig()
        self._index = ann.flat_index(dim)
        self._labels: list[str | None] = []  # label -> id, None once deleted
        self._pos: dict[str, int] = {}  # id -> label
        self.n_trained = 0  # vectors the IVF was trained on (0: flat)
        self.last_calibration: tuple[int, float] | None = None

    # ------------------------------------------------------------------ writes
    def __len__(self) -> int:
        return len(self._pos)

    def _check(self, vectors: np.ndarray, n: int) -> np.ndarray:
        v = np.ascontiguousarray(vectors, dtype=np.float32)
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
        start = len(self._labels)
        self._index.add_with_ids(v, np.arange(start, start + len(ids), dtype=np.int64))
        self._labels.extend(ids)
        self._pos.update({i: start + j for j, i in enumerate(ids)})

    def delete(self, ids: Iterable[str]) -> None:
        labels = [self._pos.pop(i) for i in ids if i in self._pos]
        if labels:
            self._index.remove_ids(np.asarray(labels, dtype=np.int64))
            for label in labels:
                self._labels[label] = None

    # ------------------------------------------------------------------ layout
    @property
    def uses_ivf(self) -> bool:
        """Whether searches go through the IVF (at or above ``ann_threshold`` live vectors)."""
        return len(self) >= self.config.ann_threshold

    def _live(self) -> tuple[list[str], np.ndarray]:
        """Live ids and their vectors ``(n, dim)``, in label order."""
        labels = np.fromiter((lb for lb, i in enumerate(self._labels) if i is not None), dtype=np.int64)
        vecs = self._index.reconstruct_batch(labels) if len(labels) else np.zeros((0, self.dim), np.float32)
        return [self._labels[lb] for lb in labels], vecs

    def _rebuild(self, train: bool) -> None:
        """Renumber the live vectors 0..n-1 into a fresh index: flat, the same IVF cells, or new cells."""
        ids, vecs = self._live()
        cfg = self.config
        if not self.uses_ivf:
            index, self.n_trained = ann.flat_index(self.dim), 0
        elif train:
            nlist = min(cfg.nlist or ann.default_nlist(len(ids)), len(ids))
            rng = np.random.default_rng(cfg.seed)
            sample = vecs[rng.choice(len(ids), size=min(len(ids), cfg.train_per_cell * nlist), replace=False)]
            index, self.n_trained = ann.train_ivf(sample, nlist, cfg.kmeans_iters, cfg.seed), len(ids)
        else:  # same cells and probe count, renumbered rows
            index = ann.clone_empty(self._index)
        index.add_with_ids(vecs, np.arange(len(ids), dtype=np.int64))
        if train and self.uses_ivf:
            if cfg.nprobe is not None:
                index.nprobe = min(cfg.nprobe, index.nlist)
            else:
                self.last_calibration = ann.calibrate_nprobe(index, vecs, cfg.target_recall, seed=cfg.seed)
        self._index, self._labels = index, list(ids)
        self._pos = {i: lb for lb, i in enumerate(ids)}

    def refresh(self) -> None:
        """Bring the index in line with its size now (else it happens at the next search or commit)."""
        ivf_now = ann.n_cells(self._index) > 0
        if self.uses_ivf and (not ivf_now or len(self) > 2 * self.n_trained):
            self._rebuild(train=True)
        elif ivf_now and not self.uses_ivf:
            self._rebuild(train=False)
        elif len(self._labels) - len(self) > 0.2 * max(len(self._labels), 1):
            self._rebuild(train=False)

    # ------------------------------------------------------------------ reads
    def search(self, query: np.ndarray, k: int, exact: bool = False) -> list[tuple[str, float]]:
        """Top-``k`` ``(id, cosine)``; ``exact=True`` probes every IVF cell (for measuring its recall)."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise RetrievalError(f"Query vector has {q.shape[0]} dims; this index holds {self.dim}-dim vectors.")
        if k < 1 or not len(self):
            return []
        self.refresh()
        cells = ann.n_cells(self._index)
        scores, labels = ann.search(self._index, q[None], min(k, len(self)), nprobe=cells if exact and cells else None)
        return [(self._labels[lb], float(s)) for s, lb in zip(scores[0], labels[0]) if lb >= 0]

    def fetch(self, ids: Sequence[str]) -> np.ndarray:
        missing = [i for i in ids if i not in self._pos]
        if missing:
            raise RetrievalError(f"No vectors for ids {missing[:5]}; they were deleted or never added.")
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_batch(np.asarray([self._pos[i] for i in ids], dtype=np.int64))

    def ids(self) -> list[str]:
        """Live ids in storage order."""
        return [i for i in self._labels if i is not None]

    # ------------------------------------------------------------------ persistence
    def commit(self, folder: Path, generation: int) -> dict[str, Any]:
        self.refresh()
        folder = Path(folder)
        files = {"index": generation_name("vectors", generation, "faiss"),
                 "ids": generation_name("ids", generation, "json")}
        data = ann.serialize(self._index)
        atomic_write(folder / files["index"], lambda f: f.write(data))
        atomic_write_json(folder / files["ids"], self._labels)
        return {"name": self.name, "dim": self.dim, "count": len(self), "files": files,
                "config": asdict(self.config), "n_trained": self.n_trained}

    @classmethod
    def open(cls, folder: Path, state: dict[str, Any] | None, dim: int,
             config: EmbeddedConfig | None = None) -> "EmbeddedBackend":
        """Reopen from a committed ``state`` (or start empty when ``state`` is None)."""
        if state is None:
            return cls(dim, config)
        files = state["files"]
        if "index" not in files:
            raise RetrievalError(
                f"The index in {str(folder)!r} was written by an older cortex (numpy vectors, no FAISS index). "
                "Rebuild it with: cortex rag index PATH --rebuild"
            )
        backend = cls(dim, config or EmbeddedConfig(**state.get("config", {})))
        try:
            index = ann.deserialize((Path(folder) / files["index"]).read_bytes())
            labels = json.loads((Path(folder) / files["ids"]).read_text(encoding="utf-8"))
        except (OSError, ValueError, RuntimeError) as e:  # faiss raises RuntimeError on a torn file
            raise RetrievalError(
                f"The vector files of the index in {str(folder)!r} are missing or corrupt ({e}). "
                "Rebuild the index with: cortex rag index PATH --rebuild"
            ) from e
        live = sum(i is not None for i in labels)
        if index.d != dim or index.ntotal != live:
            raise RetrievalError(
                f"The index in {str(folder)!r} has {index.ntotal} vectors of width {index.d} for {live} ids of "
                f"width {dim}. Rebuild it with: cortex rag index PATH --rebuild"
            )
        if config is not None and config.nprobe is not None and ann.n_cells(index):
            index.nprobe = min(config.nprobe, index.nlist)
        backend._index, backend._labels = index, labels
        backend._pos = {i: lb for lb, i in enumerate(labels) if i is not None}
        backend.n_trained = int(state.get("n_trained", 0))
        return backend


BackendFactory = Callable[..., VectorBackend]


def _open_chroma(folder: Path, state: dict[str, Any] | None, dim: int, **options: Any) -> VectorBackend:
    from cortex.retrieval.chroma import ChromaBackend  # chromadb is imported only when this backend is used

    return ChromaBackend.open(folder, state, dim, **options)


def _open_embedded(folder: Path, state: dict[str, Any] | None, dim: int, **options: Any) -> VectorBackend:
    if options:
        raise ConfigError(f"The embedded backend takes no options (got {sorted(options)}); "
                          "--url and --collection are for --backend chroma.")
    return EmbeddedBackend.open(folder, state, dim)


BACKENDS: dict[str, BackendFactory] = {
    "embedded": _open_embedded,
    "chroma": _open_chroma,
}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``factory(folder, state_or_None, dim, **options) -> VectorBackend`` available as backend ``name``.

    ``options`` are the caller's backend options (e.g. ``url`` for ``chroma``); a factory that
    takes none is called without them.
    """
    BACKENDS[name] = factory


def open_backend(name: str, folder: Path, state: dict[str, Any] | None, dim: int,
                 options: dict[str, Any] | None = None) -> VectorBackend:
    """The backend ``name`` reopened from ``state`` (or new when ``state`` is None), given ``options``."""
    if name not in BACKENDS:
        raise ConfigError.bad_choice("backend", name, BACKENDS)
    return BACKENDS[name](folder, state, dim, **(options or {}))
