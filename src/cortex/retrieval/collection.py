"""A persistent collection: payload records (with their text) plus their vectors in a backend.

The code index and the long-term memory are both collections. The folder holds a pointer file
``collection.json`` naming the live generation of ``records.gN.jsonl`` and of the backend's files,
the embedder that produced the vectors (id and width), and free ``extra`` state of the owner.

Many writers, one folder. Threads, asyncio tasks (LangChain runs them in threads) and separate
processes may all write the same folder. Each :class:`Collection` applies its changes in memory
at once (under a thread lock) and also keeps them as *pending operations*. :meth:`Collection.commit`
takes the folder's file lock, and only inside it looks at what is committed on disk: if another
writer committed since this object last loaded, the committed state is loaded and the pending
operations are replayed on top of it (vectors are kept, nothing is embedded again), and then a new
generation is written. So no commit overwrites another, and no document is lost or duplicated.

Readers never take the file lock: they read the pointer and the files it names, and retry if a
concurrent commit swept those files in between (the previous generation is kept for that). A
writer killed mid-commit (even by SIGKILL) leaves the pointer on the last committed generation,
and the kernel releases its lock with the process, so the next writer proceeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from cortex.errors import RetrievalError
from cortex.retrieval._io import atomic_write, atomic_write_json, generation_name, sweep_generations
from cortex.retrieval.backend import VectorBackend, open_backend
from cortex.retrieval.embedder import Embedder

FORMAT_VERSION = 2  # 2: user metadata apart from chunk fields; the embedder's identity is checked on open
POINTER = "collection.json"
LOCK_FILE = ".lock"
LOCK_TIMEOUT_S = 600.0  # a long `cortex rag index` holds the lock while it embeds
READ_RETRIES = 8
Progress = Callable[[str, int, int], None]
Stamp = tuple[int, int, int] | None


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


@dataclass
class _Snapshot:
    """One committed generation as loaded from disk (or the empty state of a new folder)."""

    records: dict[str, dict[str, Any]]
    backend: VectorBackend
    backend_name: str
    extra: dict[str, Any]
    generation: int
    stamp: Stamp


@dataclass(frozen=True)
class _Upsert:
    """Store ``vectors`` ``(N, dim)`` and payloads under ``ids``."""

    ids: list[str]
    vectors: np.ndarray
    payloads: list[dict[str, Any]]

    def apply(self, c: "Collection") -> None:
        c.backend.upsert(self.ids, self.vectors)
        for i, p in zip(self.ids, self.payloads):
            c.records[i] = {**p, "id": i}


@dataclass(frozen=True)
class _Delete:
    """Remove ``ids`` (unknown ones are ignored)."""

    ids: list[str]

    def apply(self, c: "Collection") -> None:
        c.backend.delete(self.ids)
        for i in self.ids:
            c.records.pop(i, None)


@dataclass(frozen=True)
class _Put:
    """Replace payloads of ids that exist, keeping their vectors (e.g. a file's new hash)."""

    payloads: dict[str, dict[str, Any]]

    def apply(self, c: "Collection") -> None:
        for i, p in self.payloads.items():
            if i in c.records:
                c.records[i] = {**p, "id": i}


_Op = _Upsert | _Delete | _Put


def _stamp(folder: Path) -> Stamp:
    """Identity of the pointer file: every commit replaces it (new inode), so a change shows here."""
    try:
        st = os.stat(folder / POINTER)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _dedupe(ids: Sequence[str]) -> list[int]:
    """Positions of the last occurrence of each id (a later duplicate replaces an earlier one)."""
    last = {i: j for j, i in enumerate(ids)}
    return sorted(last.values())


class Collection:
    """Records ``id -> payload dict`` and their vectors; committed atomically to ``folder``.

    Use :meth:`open`. ``kind`` names what the collection holds (``code-index``, ``memory``) so
    that a folder of one kind is not opened as another. ``version`` grows with every change of
    the in-memory state (own writes or a newer commit loaded), so owners can cache derived data;
    ``mutex`` (re-entrant) guards that state against other threads of this process.
    """

    def __init__(self, folder: Path, embedder: Embedder, kind: str, snapshot: _Snapshot,
                 backend_options: dict[str, Any] | None = None):
        self.folder = folder
        self.backend_options = dict(backend_options or {})  # e.g. the chroma URL; used at every reload
        self.embedder = embedder
        self.kind = kind
        self.version = 0
        self.mutex = threading.RLock()
        self._file_lock = FileLock(str(folder / LOCK_FILE), timeout=LOCK_TIMEOUT_S)
        self._pending: list[_Op] = []
        self._install(snapshot)

    # ------------------------------------------------------------------ loading
    @staticmethod
    def read_pointer(folder: Path) -> dict[str, Any] | None:
        """The pointer file's content, or None for a folder that holds no collection yet."""
        path = Path(folder) / POINTER
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as e:
            raise RetrievalError(
                f"{str(path)!r} is unreadable ({e}). Delete the folder and rebuild the index."
            ) from e

    @classmethod
    def open(cls, folder: str | Path, embedder: Embedder, *, kind: str, create: bool = True,
             backend: str = "embedded", backend_options: dict[str, Any] | None = None) -> "Collection":
        """Open the collection in ``folder`` (creating an empty one if allowed).

        ``backend`` names the vector backend of a new collection (an existing one keeps its own);
        ``backend_options`` go to the backend each time it is opened (``{"url": ...}`` for chroma).

        Raises :class:`RetrievalError` when the folder holds another kind of collection, or
        vectors from a different embedder (it names both).
        """
        folder = Path(folder)
        snap = _load(folder, embedder, kind, backend_options) if folder.exists() else None
        if snap is None:
            if not create:
                raise RetrievalError(
                    f"No {kind} in {str(folder)!r}. Build one first, e.g. `cortex rag index PATH`."
                )
            folder.mkdir(parents=True, exist_ok=True)
            snap = _Snapshot({}, open_backend(backend, folder, None, embedder.dim, backend_options), backend, {}, 0, None)
        return cls(folder, embedder, kind, snap, backend_options)

    def _install(self, snap: _Snapshot) -> None:
        self.records = snap.records
        self.backend = snap.backend
        self.backend_name = snap.backend_name
        self.extra = snap.extra
        self.generation = snap.generation
        self._stamp = snap.stamp
        self._extra_base = json.dumps(snap.extra, sort_keys=True)
        self.version += 1

    def _adopt_latest(self) -> None:
        """Load the newest commit and replay pending operations on it (caller holds the mutex)."""
        snap = _load(self.folder, self.embedder, self.kind, self.backend_options)
        if snap is None:  # the folder was emptied under us: keep what we have
            return
        own_extra = self.extra if json.dumps(self.extra, sort_keys=True) != self._extra_base else None
        self._install(snap)
        if own_extra is not None:  # our uncommitted owner state wins over the older committed one
            self.extra = own_extra
        for op in self._pending:
            op.apply(self)

    def sync(self) -> bool:
        """Adopt the last committed state if another writer committed since; True if it did.

        Pending (uncommitted) changes of this object are replayed on top. Reads call this, so a
        reader sees what other threads and processes committed.
        """
        with self.mutex:
            if _stamp(self.folder) == self._stamp:
                return False
            self._adopt_latest()
            return True

    # ------------------------------------------------------------------ locking
    @contextlib.contextmanager
    def locked(self) -> Iterator["Collection"]:
        """Hold this collection's thread lock and folder lock, with the newest commit loaded.

        For read-modify-commit sequences whose logic depends on the current state (the code
        index's incremental update): nobody else commits until the block ends.
        """
        # Folder lock first, thread lock second (always in this order): a thread waiting for another
        # process's commit does not block this process's readers, which only need the thread lock.
        try:
            self._file_lock.acquire()
        except Timeout as e:
            raise RetrievalError(
                f"Another process has held the lock on {str(self.folder)!r} for {LOCK_TIMEOUT_S:.0f} s "
                "(probably a long `cortex rag index`). Wait for it to finish, then retry."
            ) from e
        try:
            with self.mutex:
                self.sync()
                yield self
        finally:
            self._file_lock.release()

    # ------------------------------------------------------------------ writes
    def __len__(self) -> int:
        return len(self.records)

    def _record(self, op: _Op) -> None:
        """Apply ``op`` to the in-memory state now, and keep it for replay until it is committed."""
        with self.mutex:
            op.apply(self)
            self.version += 1
            self._pending.append(op)

    def add(self, ids: Sequence[str], texts: Sequence[str], payloads: Sequence[dict[str, Any]],
            progress: Progress | None = None, batch: int = 64) -> int:
        """Embed ``texts`` and store them under ``ids`` with ``payloads``; returns how many were truncated.

        An id given twice keeps its last text. Embedding runs outside the lock, so threads embed
        in parallel and only the in-memory update is serialised.
        """
        if not (len(ids) == len(texts) == len(payloads)):
            raise RetrievalError(f"{len(ids)} ids, {len(texts)} texts and {len(payloads)} payloads; give one of each per record.")
        keep = _dedupe(ids)
        ids, texts, payloads = [ids[j] for j in keep], [texts[j] for j in keep], [payloads[j] for j in keep]
        truncated = 0
        for s in range(0, len(ids), batch):
            out = self.embedder.embed(texts[s : s + batch], warn=False)
            self._record(_Upsert(list(ids[s : s + batch]), out.vectors, [dict(p) for p in payloads[s : s + batch]]))
            truncated += int(out.truncated.sum())
            if progress:
                progress("embed", min(s + batch, len(ids)), len(ids))
        return truncated

    def add_vectors(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        """Store ``ids`` with ``payloads`` and vectors ``(N, dim)`` that are already computed (nothing is embedded)."""
        self._record(_Upsert(list(ids), np.asarray(vectors, dtype=np.float32), [dict(p) for p in payloads]))

    def held_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors the backend still holds for uncommitted ``ids`` from an interrupted write (a server keeps
        what it was sent; the embedded backend loses it with the process and has no ``held``)."""
        held = getattr(self.backend, "held", None)  # optional capability of the backend protocol
        with self.mutex:
            return held(ids) if held is not None and ids else {}

    def delete(self, ids: Iterable[str]) -> None:
        """Remove ``ids`` (unknown ones are ignored)."""
        self._record(_Delete(list(ids)))

    def put(self, payloads: dict[str, dict[str, Any]]) -> None:
        """Replace the payloads of existing ids, keeping their vectors (unknown ids are ignored)."""
        self._record(_Put({i: dict(p) for i, p in payloads.items()}))

    def commit(self) -> None:
        """Write a new generation of records and vectors under the folder lock, then switch the pointer.

        The committed state is re-read inside the lock, so concurrent writers never overwrite
        each other's documents. A commit with nothing new is skipped.
        """
        with self.locked():  # sync() inside: we now build on the newest commit
            extra_json = json.dumps(self.extra, sort_keys=True)
            if self._stamp is not None and not self._pending and extra_json == self._extra_base:
                return
            gen = self.generation + 1
            records_file = generation_name("records", gen, "jsonl")
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records.values()).encode("utf-8")
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
            self.generation, self._stamp = gen, _stamp(self.folder)
            self._extra_base = extra_json
            self._pending.clear()
            sweep_generations(self.folder, keep={gen, gen - 1})  # gen - 1: for readers still loading it

    # ------------------------------------------------------------------ reads
    def dense(self, query: str, k: int) -> DenseQuery:
        """Nearest records to ``query`` by cosine of embeddings (the query is truncated if too long)."""
        out = self.embedder.embed_queries([query], warn=True)
        return DenseQuery(self.search_vector(out.vectors[0], k), int(out.n_tokens[0]), bool(out.truncated[0]))

    def search_vector(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Nearest records to a unit ``vector`` ``(dim,)``: ``(id, cosine)`` best first."""
        self.sync()
        with self.mutex:  # a search may re-lay the backend's cells
            return self.backend.search(np.asarray(vector, dtype=np.float32), k)

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors ``(len(ids), dim)``."""
        with self.mutex:
            return self.backend.fetch(ids)


def _check_pointer(folder: Path, pointer: dict[str, Any], embedder: Embedder, kind: str) -> None:
    if pointer.get("format") != FORMAT_VERSION:
        raise RetrievalError(
            f"{str(folder)!r} has format {pointer.get('format')!r}; this cortex reads {FORMAT_VERSION}. "
            "Delete the folder and build it again with this cortex (`cortex rag index PATH` for a code index)."
        )
    if pointer.get("kind") != kind:
        raise RetrievalError(f"{str(folder)!r} holds a {pointer.get('kind')!r}, not a {kind!r}; pick another folder.")
    rec = pointer["embedder"]
    if rec["id"] != embedder.id or rec["dim"] != embedder.dim:
        raise RetrievalError(
            f"The {kind} in {str(folder)!r} was built with embedder {rec['id']!r} (dim {rec['dim']}), "
            f"but it was opened with {embedder.id!r} (dim {embedder.dim}). Open it with the same embedder, "
            "or delete the folder and build it again with the new one."
        )


def _load_generation(folder: Path, pointer: dict[str, Any], embedder: Embedder, stamp: Stamp,
                     backend_options: dict[str, Any] | None = None) -> _Snapshot:
    try:
        lines = (folder / pointer["records"]).read_text(encoding="utf-8").splitlines()
        records = {r["id"]: r for r in map(json.loads, lines) if r}
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise RetrievalError(f"Records of {str(folder)!r} are missing or corrupt ({e}). "
                             "Delete the folder and build it again (`cortex rag index PATH` for a code index).") from e
    backend_state = pointer["backend"]
    be = open_backend(backend_state["name"], folder, backend_state, embedder.dim, backend_options)
    if len(be) != len(records):
        raise RetrievalError(
            f"{str(folder)!r} has {len(records)} records but {len(be)} vectors. "
            "Delete the folder and build it again (`cortex rag index PATH` for a code index)."
        )
    return _Snapshot(records, be, backend_state["name"], pointer.get("extra", {}), int(pointer["generation"]), stamp)


def _load(folder: Path, embedder: Embedder, kind: str, backend_options: dict[str, Any] | None = None) -> _Snapshot | None:
    """The last committed generation in ``folder`` (None when there is none), read without the lock.

    A concurrent commit may sweep the files of the generation being read; then the pointer has
    moved on and the read starts over. An error while the pointer stays put is real corruption.
    """
    last: RetrievalError | None = None
    for _ in range(READ_RETRIES):
        stamp = _stamp(folder)
        pointer = Collection.read_pointer(folder)
        if pointer is None:
            return None
        _check_pointer(folder, pointer, embedder, kind)
        try:
            return _load_generation(folder, pointer, embedder, stamp, backend_options)
        except RetrievalError as e:
            if _stamp(folder) == stamp:
                raise
            last = e
    raise RetrievalError(
        f"{str(folder)!r} was committed to {READ_RETRIES} times while being read; retry when writers are idle."
    ) from last
