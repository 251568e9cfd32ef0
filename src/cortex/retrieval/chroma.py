"""A Chroma server as the vector backend: ``cortex rag index PATH --backend chroma --url http://HOST:PORT``.

The index folder keeps the chunk records and the pointer as for the embedded backend; the
vectors live in one collection on the server (HNSW, inner-product space), named after the index
folder unless given. Chroma stores every upsert durably as it arrives, so the expensive part of
indexing (embedding) survives a crash or a restart of either side: vectors the server already
holds under a content-addressed chunk id are taken back by :meth:`ChromaBackend.held` instead of
being embedded again (see ``CodeIndex.update``).

What a reader sees is the last commit, not the server's live contents: the committed ids are
written beside the records at each commit (``chroma_ids.gN.json``), searches keep only ids in
this view, and deletes are applied on the server at commit time. (An upsert of an id that is
already committed replaces its server vector at once; chunk ids are hashes of their content, so
for the code index the vector is the same.)

Server calls that fail in transit are retried briefly (a server restarting), then raise
:class:`~cortex.errors.RetrievalError` naming the URL and how to start the server.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np

from cortex.errors import ConfigError, RetrievalError
from cortex.retrieval._io import atomic_write_json, generation_name

T = TypeVar("T")
_COLLECTION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class ChromaConfig:
    """Where the server is and how patiently to talk to it.

    Args:
        url: ``http://HOST:PORT`` (or ``https://``) of a running ``chroma run`` server.
        collection: server collection name (3-512 characters of ``[a-zA-Z0-9._-]``); default
            ``cortex-`` plus a hash of the index folder, so two indexes never share one.
        retries: attempts of a call that fails in transit (connection refused, reset, timeout).
        backoff_s: first wait between attempts; doubles after each.
        ef_search: HNSW candidate list of a query (Chroma's default is 100).
    """

    url: str
    collection: str | None = None
    retries: int = 4
    backoff_s: float = 0.5
    ef_search: int = 200

    def __post_init__(self) -> None:
        problems = []
        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            problems.append(f"chroma url={self.url!r} must look like http://HOST:PORT (e.g. http://127.0.0.1:8000).")
        if self.collection is not None and not (
            3 <= len(self.collection) <= 512 and set(self.collection) <= _COLLECTION_CHARS
            and self.collection[0].isalnum() and self.collection[-1].isalnum()
        ):
            problems.append(f"chroma collection={self.collection!r} must be 3-512 characters of [a-zA-Z0-9._-], "
                            "starting and ending with a letter or digit.")
        if self.retries < 1:
            problems.append(f"chroma retries={self.retries} must be at least 1.")
        if self.backoff_s < 0:
            problems.append(f"chroma backoff_s={self.backoff_s} must be >= 0.")
        if self.ef_search < 1:
            problems.append(f"chroma ef_search={self.ef_search} must be at least 1.")
        if problems:
            raise ConfigError(" ".join(problems))


def default_collection_name(folder: Path) -> str:
    """``cortex-<16 hex>`` from the index folder's absolute path."""
    return "cortex-" + hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]


class _Server:
    """One collection on a Chroma server, every call wrapped in retries and cortex errors."""

    def __init__(self, config: ChromaConfig, name: str, dim: int):
        self.config, self.name, self.dim = config, name, dim
        self._collection: Any = None
        self.max_batch = 1000

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(collection)``, retried on transport failures; any failure becomes a RetrievalError."""
        import httpx
        from chromadb.errors import ChromaError, NotFoundError

        wait, last = self.config.backoff_s, None
        for attempt in range(self.config.retries):
            try:
                return fn(self.collection())
            except NotFoundError as e:
                raise RetrievalError(
                    f"The Chroma server at {self.config.url} has no collection {self.name!r} any more ({e}). "
                    "Rebuild the index there with: cortex rag index PATH --backend chroma --url "
                    f"{self.config.url} --rebuild"
                ) from e
            except (httpx.TransportError, ValueError, ConnectionError) as e:
                if isinstance(e, ValueError) and "connect" not in str(e).lower():
                    # a real bad value, not chromadb's "Could not connect to a Chroma server"
                    raise RetrievalError(f"The Chroma client rejected the request to {what}: {e}") from e
                last = e
                self._collection = None  # reconnect: the server may have restarted
                if attempt + 1 < self.config.retries:
                    time.sleep(wait)
                    wait *= 2
            except (ChromaError, httpx.HTTPError) as e:
                raise RetrievalError(f"The Chroma server at {self.config.url} refused to {what}: {e}") from e
        raise RetrievalError(
            f"Cannot reach the Chroma server at {self.config.url} to {what} ({type(last).__name__}: {last}); "
            f"tried {self.config.retries} times. Start it with `chroma run --path DATA_DIR --host HOST --port PORT` "
            "(or fix --url), then run the same command again: `cortex rag index` resumes, and chunks the server "
            "already holds are not embedded again."
        ) from last

    def collection(self) -> Any:
        if self._collection is None:
            import chromadb
            from chromadb.config import Settings

            url = urlparse(self.config.url)
            client = chromadb.HttpClient(
                host=url.hostname, port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https", settings=Settings(anonymized_telemetry=False),
            )
            self.max_batch = max(1, min(int(client.get_max_batch_size()), 4096))
            col = client.get_or_create_collection(
                self.name, embedding_function=None, metadata={"cortex_dim": self.dim},
                configuration={"hnsw": {"space": "ip", "ef_search": self.config.ef_search}},
            )
            width = (col.metadata or {}).get("cortex_dim")
            if width != self.dim:
                raise RetrievalError(
                    f"Chroma collection {self.name!r} at {self.config.url} holds {width}-dim vectors, not {self.dim}; "
                    "give the index another --name (or --collection) or rebuild it with --rebuild."
                )
            self._collection = col
        return self._collection

    def batches(self, ids: Sequence[str]) -> Iterable[slice]:
        for s in range(0, len(ids), self.max_batch):
            yield slice(s, s + self.max_batch)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors the server holds for ``ids`` (absent ids are left out)."""
        out: dict[str, np.ndarray] = {}
        self.collection()
        for sl in self.batches(ids):
            got = self.call("read vectors", lambda c, sl=sl: c.get(ids=list(ids[sl]), include=["embeddings"]))
            out.update(zip(got["ids"], np.asarray(got["embeddings"], dtype=np.float32).reshape(-1, self.dim)))
        return out

    def all_ids(self, page: int = 10_000) -> set[str]:
        ids: set[str] = set()
        while True:
            got = self.call("list ids", lambda c: c.get(include=[], limit=page, offset=len(ids)))
            ids.update(got["ids"])
            if len(got["ids"]) < page:
                return ids


class ChromaBackend:
    """Vectors on a Chroma server; the committed view is the id list written at each commit."""

    name = "chroma"

    def __init__(self, config: ChromaConfig, collection: str, dim: int, committed: Iterable[str] = ()):
        self.config, self.dim = config, dim
        self.server = _Server(config, collection, dim)
        self._view: set[str] = set(committed)  # ids a reader of this state sees
        self._deleted: set[str] = set()  # removed from the view; removed on the server at commit

    def __len__(self) -> int:
        return len(self._view)

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids = list(ids)
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.shape != (len(ids), self.dim) or not np.isfinite(v).all():
            raise RetrievalError(f"Vectors of shape {tuple(v.shape)} (finite: {bool(np.isfinite(v).all())}) do not fit: "
                                 f"expected ({len(ids)}, {self.dim}) finite rows, one per id.")
        if len(set(ids)) != len(ids):
            raise RetrievalError("Duplicate ids in one upsert; pass each id once.")
        self.server.collection()
        for sl in self.server.batches(ids):
            self.server.call("store vectors", lambda c, sl=sl: c.upsert(ids=ids[sl], embeddings=v[sl]))
        self._view.update(ids)
        self._deleted.difference_update(ids)

    def delete(self, ids: Iterable[str]) -> None:
        gone = self._view.intersection(ids)
        self._view -= gone
        self._deleted |= gone

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Top-``k`` ``(id, cosine)`` among the visible ids (the server may hold others: asked for more until found)."""
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.dim:
            raise RetrievalError(f"Query vector has {q.shape[1]} dims; this index holds {self.dim}-dim vectors.")
        if k < 1 or not self._view:
            return []
        want = k + len(self._deleted)  # removed ids may still sit on the server until the next commit
        while True:
            got = self.server.call("search", lambda c: c.query(query_embeddings=q, n_results=want, include=["distances"]))
            found = got["ids"][0]
            hits = [(i, 1.0 - float(d)) for i, d in zip(found, got["distances"][0]) if i in self._view]
            if len(hits) >= k or len(found) < want:  # enough, or the server has nothing more
                return hits[:k]
            want *= 2  # another writer's uncommitted vectors took places: ask for more

    def fetch(self, ids: Sequence[str]) -> np.ndarray:
        ids = list(ids)
        missing = [i for i in ids if i not in self._view]
        held = self.server.vectors(ids) if ids and not missing else {}
        missing += [i for i in ids if i in self._view and i not in held]
        if missing:
            raise RetrievalError(f"No vectors for ids {missing[:5]}; they were deleted or never added.")
        return np.stack([held[i] for i in ids]) if ids else np.zeros((0, self.dim), np.float32)

    def held(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors the server holds for those ``ids`` not in the committed view (from an interrupted write)."""
        return self.server.vectors([i for i in ids if i not in self._view])

    def commit(self, folder: Path, generation: int) -> dict[str, Any]:
        """Delete removed ids on the server, then write the committed id list; the returned state reopens it."""
        gone = sorted(self._deleted)
        self.server.collection()
        for sl in self.server.batches(gone):
            self.server.call("delete vectors", lambda c, sl=sl: c.delete(ids=gone[sl]))
        self._deleted.clear()
        ids_file = generation_name("chroma_ids", generation, "json")
        atomic_write_json(Path(folder) / ids_file, sorted(self._view))
        return {"name": self.name, "dim": self.dim, "count": len(self), "url": self.config.url,
                "collection": self.server.name, "files": {"ids": ids_file}}

    @classmethod
    def open(cls, folder: Path, state: dict[str, Any] | None, dim: int, url: str | None = None,
             collection: str | None = None, **settings: Any) -> "ChromaBackend":
        """Reopen from ``state`` (its URL unless ``url`` overrides it), or start a new collection."""
        url = url or (state or {}).get("url")
        if not url:
            raise ConfigError("The chroma backend needs the server's URL: pass --url http://HOST:PORT.")
        if state is None:
            config = ChromaConfig(url, collection, **settings)
            return cls(config, config.collection or default_collection_name(folder), dim)
        config = ChromaConfig(url, state["collection"], **settings)
        try:
            committed = json.loads((Path(folder) / state["files"]["ids"]).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as e:
            raise RetrievalError(f"The Chroma id list of the index in {str(folder)!r} is missing or corrupt ({e}). "
                                 "Rebuild it with --rebuild.") from e
        return cls(config, state["collection"], dim, committed)
