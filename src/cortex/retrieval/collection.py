"""A persistent collection: payload records (with their text) plus their vectors in a backend.

The code index and the long-term memory are both collections. The folder holds a pointer file
``collection.json`` naming the live generation of ``records.gN.jsonl`` and of the backend's files,
the embedder that produced the vectors (id and width), and free ``extra`` state of the owner.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from cortex.errors import RetrievalError
from cortex.retrieval._io import atomic_write, atomic_write_json, generation_name, sweep_generations
from cortex.retrieval.backend import VectorBackend, open_backend
from cortex.retrieval.embedder import Embedder

FORMAT_VERSION = 1
POINTER = "collection.json"
Progress = Callable[[str, int, int], None]


@dataclass
class DenseQuery:
    """A query's dense neighbours and what the embedder did to it.

    Attributes:
        neighbours: ``(id, cosine)`` best first.
        n_tokens: tokens in the query before truncation.
        truncated: True when the query was cut to the embedder's limit.
    """

    neighbours: list[tuple[str, float]]
    n_tokens: int
    truncated: bool


class Collection:
    """Records ``id -> payload dict`` and their vectors; committed atomically to ``folder``.

    Use :meth:`open`. ``kind`` names what the collection holds (``code-index``, ``memory``) so
    that a folder of one kind is not opened as another.
    """

    def __init__(self, folder: Path, embedder: Embedder, backend: VectorBackend, backend_name: str,
                 kind: str, records: dict[str, dict[str, Any]], extra: dict[str, Any], generation: int):
        self.folder = folder
        self.embedder = embedder
        self.backend = backend
        self.backend_name = backend_name
        self.kind = kind
        self.records = records
        self.extra = extra
        self.generation = generation
        self.lock = FileLock(str(folder / ".lock"), timeout=300)

    @staticmethod
    def read_pointer(folder: Path) -> dict[str, Any] | None:
        """The pointer file's content, or None for a folder that holds no collection yet."""
        path = Path(folder) / POINTER
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise RetrievalError(
                f"{str(path)!r} is unreadable ({e}). Delete the folder and rebuild the index."
            ) from e

    @classmethod
    def open(cls, folder: str | Path, embedder: Embedder, *, kind: str, create: bool = True,
             backend: str = "embedded") -> "Collection":
        """Open the collection in ``folder`` (creating an empty one if allowed).

        Raises :class:`RetrievalError` when the folder holds another kind of collection, or
        vectors from a different embedder (it says which).
        """
        folder = Path(folder)
        pointer = cls.read_pointer(folder) if folder.exists() else None
        if pointer is None:
            if not create:
                raise RetrievalError(
                    f"No {kind} in {str(folder)!r}. Build one first, e.g. `cortex rag index PATH`."
                )
            folder.mkdir(parents=True, exist_ok=True)
            return cls(folder, embedder, open_backend(backend, folder, None, embedder.dim), backend, kind, {}, {}, 0)
        if pointer.get("format") != FORMAT_VERSION:
            raise RetrievalError(
                f"{str(folder)!r} has format {pointer.get('format')!r}; this cortex reads {FORMAT_VERSION}. "
                "Rebuild it with --rebuild."
            )
        if pointer.get("kind") != kind:
            raise RetrievalError(f"{str(folder)!r} holds a {pointer.get('kind')!r}, not a {kind!r}; pick another folder.")
        rec = pointer["embedder"]
        if rec["id"] != embedder.id or rec["dim"] != embedder.dim:
            raise RetrievalError(
                f"The {kind} in {str(folder)!r} was built with embedder {rec['id']!r} (dim {rec['dim']}), "
                f"but it was opened with {embedder.id!r} (dim {embedder.dim}). Open it with the same embedder, "
                "or rebuild it with the new one (`cortex rag index PATH --rebuild`)."
            )
        try:
            lines = (folder / pointer["records"]).read_text(encoding="utf-8").splitlines()
            records = {r["id"]: r for r in map(json.loads, lines) if r}
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise RetrievalError(f"Records of {str(folder)!r} are missing or corrupt ({e}). Rebuild with --rebuild.") from e
        backend_state = pointer["backend"]
        be = open_backend(backend_state["name"], folder, backend_state, embedder.dim)
        if len(be) != len(records):
            raise RetrievalError(
                f"{str(folder)!r} has {len(records)} records but {len(be)} vectors. Rebuild with --rebuild."
            )
        return cls(folder, embedder, be, backend_state["name"], kind, records, pointer.get("extra", {}),
                   int(pointer["generation"]))

    def __len__(self) -> int:
        return len(self.records)

    def add(self, ids: Sequence[str], texts: Sequence[str], payloads: Sequence[dict[str, Any]],
            progress: Progress | None = None, batch: int = 64) -> int:
        """Embed ``texts`` and store them under ``ids`` with ``payloads``; returns how many were truncated."""
        if not (len(ids) == len(texts) == len(payloads)):
            raise RetrievalError(f"{len(ids)} ids, {len(texts)} texts and {len(payloads)} payloads; give one of each per record.")
        truncated = 0
        for s in range(0, len(ids), batch):
            out = self.embedder.embed(texts[s : s + batch], warn=False)
            self.backend.upsert(ids[s : s + batch], out.vectors)
            for i, p in zip(ids[s : s + batch], payloads[s : s + batch]):
                self.records[i] = {**p, "id": i}
            truncated += int(out.truncated.sum())
            if progress:
                progress("embed", min(s + batch, len(ids)), len(ids))
        return truncated

    def delete(self, ids: Iterable[str]) -> None:
        """Remove ``ids`` (unknown ones are ignored)."""
        ids = list(ids)
        self.backend.delete(ids)
        for i in ids:
            self.records.pop(i, None)

    def dense(self, query: str, k: int) -> DenseQuery:
        """Nearest records to ``query`` by cosine of embeddings (the query is truncated if too long)."""
        out = self.embedder.embed([query], warn=True)
        return DenseQuery(self.backend.search(out.vectors[0], k), int(out.n_tokens[0]), bool(out.truncated[0]))

    def commit(self) -> None:
        """Write a new generation of records and vectors, then switch the pointer to it."""
        gen = self.generation + 1
        records_file = generation_name("records", gen, "jsonl")
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records.values()).encode("utf-8")
        with self.lock:
            atomic_write(self.folder / records_file, lambda f: f.write(lines))
            backend_state = self.backend.commit(self.folder, gen)
            atomic_write_json(self.folder / POINTER, {
                "format": FORMAT_VERSION,
                "kind": self.kind,
                "generation": gen,
                "embedder": {"id": self.embedder.id, "dim": self.embedder.dim},
                "records": records_file,
                "backend": backend_state,
                "count": len(self.records),
                "extra": self.extra,
            })
            self.generation = gen
            sweep_generations(self.folder, keep=gen)

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors ``(len(ids), dim)``."""
        return self.backend.fetch(ids)
