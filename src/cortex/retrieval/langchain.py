"""cortex retrieval behind LangChain's interfaces, so existing chains use it unchanged.

- :class:`CortexEmbeddings` is a ``langchain_core`` ``Embeddings`` over any cortex embedder.
- :class:`LangChainEmbedder` is the other way round: any LangChain ``Embeddings`` as a cortex
  embedder, so a store or index can run on the user's own embedding model.
- :class:`CortexVectorStore` is a ``VectorStore`` over a :class:`~cortex.retrieval.index.CodeIndex`
  (dense similarity with cosine scores; ``as_retriever()`` works, MMR included).
- :class:`CortexRetriever` is a ``BaseRetriever`` doing cortex's hybrid (BM25 + dense) search.

Both pass LangChain's own conformance suites (``langchain-tests``, see tests/retrieval).
A document's ``metadata`` is exactly what it was added with: cortex keeps its chunk fields apart.
Chunks of indexed files (``cortex rag index``) carry their path, lines, kind and name as metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cortex._extras import require

require("langchain_core", "rag")  # a MissingExtraError naming the extra, before the imports below
from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from pydantic import ConfigDict

from cortex.errors import RetrievalError
from cortex.retrieval.chunking import Chunk
from cortex.retrieval.embedder import Embedder, EmbeddingBatch, default_embedder
from cortex.retrieval.index import CodeIndex

Filter = dict[str, Any] | Callable[[Document], bool] | None


class CortexEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over a cortex :class:`~cortex.retrieval.embedder.Embedder` (MiniLM by default).

    The model loads on the first embedding, so constructing one is free.
    """

    def __init__(self, embedder: Embedder | None = None):
        self.embedder = embedder or default_embedder()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Unit vectors of ``texts``, one list of ``dim`` floats each."""
        return self.embedder.embed(texts, warn=False).vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        """The unit vector of a search query (warns if it was truncated)."""
        return self.embedder.embed_queries([text]).vectors[0].tolist()


def embeddings_identity(embeddings: Embeddings) -> str:
    """``langchain:<module>.<class>`` plus the model name where the object names one."""
    cls = type(embeddings)
    ident = f"langchain:{cls.__module__}.{cls.__qualname__}"
    for attr in ("model", "model_name", "model_id"):
        name = getattr(embeddings, attr, None)
        if isinstance(name, str) and name:
            return f"{ident}/{name}"
    return ident


class LangChainEmbedder:
    """Any LangChain ``Embeddings`` as a cortex embedder (vectors scaled to unit length for cosine search).

    ``id`` is :func:`embeddings_identity`; ``dim`` is measured by embedding one probe query unless
    given. A LangChain model does not expose its tokenizer or limit, so ``max_tokens`` is 0
    (unknown), no text is reported truncated, and ``count_tokens`` counts words.
    """

    max_tokens = 0

    def __init__(self, embeddings: Embeddings, dim: int | None = None):
        self.embeddings = embeddings
        self.id = embeddings_identity(embeddings)
        self.dim = dim if dim is not None else len(embeddings.embed_query("dimension probe"))

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _batch(self, texts: Sequence[str], rows: list[list[float]]) -> EmbeddingBatch:
        v = np.asarray(rows, dtype=np.float32).reshape(len(texts), -1) if texts else np.zeros((0, self.dim), np.float32)
        if v.shape != (len(texts), self.dim):
            raise RetrievalError(
                f"{self.id} returned vectors of shape {tuple(v.shape)} for {len(texts)} texts; the index holds "
                f"{self.dim}-dim vectors. Use the embedding model the index was built with."
            )
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        v = v / np.where(norms > 0, norms, 1.0)  # a zero vector stays zero (it matches nothing)
        words = np.array([self.count_tokens(t) for t in texts], dtype=np.int64)
        return EmbeddingBatch(v, words, np.zeros(len(texts), dtype=bool))

    def embed(self, texts: Sequence[str], warn: bool = True) -> EmbeddingBatch:
        texts = list(texts)
        return self._batch(texts, self.embeddings.embed_documents(texts) if texts else [])

    def embed_queries(self, texts: Sequence[str], warn: bool = True) -> EmbeddingBatch:
        texts = list(texts)
        return self._batch(texts, [self.embeddings.embed_query(t) for t in texts])


def as_embedder(embedding: Embeddings | Embedder | None) -> Embedder:
    """A cortex embedder for ``embedding``: cortex's own is unwrapped, any other ``Embeddings`` adapted."""
    if embedding is None:
        return default_embedder()
    if isinstance(embedding, CortexEmbeddings):
        return embedding.embedder
    if isinstance(embedding, Embeddings):
        return LangChainEmbedder(embedding)
    if isinstance(embedding, Embedder):
        return embedding
    raise RetrievalError(
        f"Expected a LangChain Embeddings or a cortex embedder, got {type(embedding).__name__}. "
        "Pass e.g. CortexEmbeddings() or any langchain_core Embeddings."
    )


def matcher(index: CodeIndex, filter: Filter) -> Callable[[Chunk], bool] | None:
    """A chunk predicate for a LangChain ``filter``: a dict of exact metadata values, or a ``Document`` callable."""
    if not filter:
        return None
    if callable(filter):
        return lambda c: bool(filter(Document(id=c.id, page_content=c.text, metadata=index.metadata_of(c))))
    items = list(filter.items())

    def match(chunk: Chunk) -> bool:
        meta = index.metadata_of(chunk)
        return all(key in meta and meta[key] == value for key, value in items)

    return match


def _unit(vector: Sequence[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class CortexVectorStore(VectorStore):
    """A LangChain ``VectorStore`` over a cortex :class:`CodeIndex` (persisted in its folder).

    Every write is committed before it returns; writers in other threads and processes are
    merged, never overwritten (see :mod:`cortex.retrieval.collection`), and every read first
    loads what they committed. ``filter`` is a dict matched exactly against metadata, or a
    callable taking a ``Document``.
    """

    def __init__(self, index: CodeIndex, embedding: Embeddings | None = None):
        self.index = index
        embedder = index.collection.embedder
        if embedding is None:
            embedding = embedder.embeddings if isinstance(embedder, LangChainEmbedder) else CortexEmbeddings(embedder)
        self._embeddings = embedding

    @classmethod
    def open(cls, folder: str | Path, embedding: Embeddings | Embedder | None = None) -> "CortexVectorStore":
        """Open (or create) the index in ``folder`` as a vector store.

        The embedder's identity and width are recorded with the index; reopening it with another
        embedder raises :class:`~cortex.errors.RetrievalError` naming both.
        """
        embedder = as_embedder(embedding)
        return cls(CodeIndex.open(folder, embedder), embedding if isinstance(embedding, Embeddings) else None)

    @property
    def embeddings(self) -> Embeddings:
        return self._embeddings

    def _document(self, chunk: Chunk) -> Document:
        return Document(id=chunk.id, page_content=chunk.text, metadata=self.index.metadata_of(chunk))

    def _where(self, filter: Filter) -> Callable[[Chunk], bool] | None:
        return matcher(self.index, filter)

    # ------------------------------------------------------------------ writes
    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                  ids: list[str | None] | None = None, **kwargs: Any) -> list[str]:
        """Embed and store ``texts`` (committed to disk), returning their ids (fresh UUIDs where none is given)."""
        out = self.index.add_texts(list(texts), metadatas, ids)
        self.index.save()
        return out

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete ``ids`` (every document when None; unknown ids are ignored) and commit."""
        with self.index.collection.locked():  # "all" means all that is committed now, not what we last saw
            self.index.delete(list(self.index.collection.records) if ids is None else ids)
            self.index.save()
        return True

    # ------------------------------------------------------------------ reads
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents of ``ids`` in that order; unknown ids are left out."""
        self.index.refresh()
        chunks = self.index.chunks
        return [self._document(chunks[i]) for i in ids if i in chunks]

    def similarity_search_with_score(self, query: str, k: int = 4, filter: Filter = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """Top-``k`` documents with cosine similarity (1 = same direction)."""
        res = self.index.search(query, k=k, mode="dense", where=self._where(filter))
        return [(self._document(h.chunk), h.score) for h in res.hits]

    def similarity_search(self, query: str, k: int = 4, filter: Filter = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter=filter)]

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4, filter: Filter = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        """Top-``k`` documents nearest to ``embedding`` (scaled to unit length), with cosine similarity."""
        return [(d, s) for d, s, _ in self._by_vector(embedding, k, filter)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: Filter = None,
                                    **kwargs: Any) -> list[Document]:
        return [d for d, _, _ in self._by_vector(embedding, k, filter)]

    def _by_vector(self, embedding: Sequence[float], k: int, filter: Filter) -> list[tuple[Document, float, np.ndarray]]:
        """``(document, cosine, stored vector)`` of the ``k`` best matches, taken under one lock."""
        where, coll = self._where(filter), self.index.collection
        self.index.refresh()
        with coll.mutex:  # ids, chunks and vectors from one state, even with writers in other threads
            chunks = self.index.chunks
            depth = len(chunks) if where is not None else k  # filtering needs every candidate to be sure of k
            pairs = [(i, s) for i, s in coll.search_vector(_unit(embedding), depth)
                     if i in chunks and (where is None or where(chunks[i]))][:k]
            vecs = coll.vectors([i for i, _ in pairs]) if pairs else np.zeros((0, coll.embedder.dim), np.float32)
            return [(self._document(chunks[i]), s, v) for (i, s), v in zip(pairs, vecs)]

    def _select_relevance_score_fn(self):
        # Scores are cosine similarities in [-1, 1]; map them to LangChain's [0, 1] relevance.
        return lambda score: (score + 1.0) / 2.0

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: Filter = None,
                                                **kwargs: Any) -> list[Document]:
        """MMR over the ``fetch_k`` nearest documents: relevance against redundancy (``lambda_mult`` 1 = pure relevance)."""
        found = self._by_vector(embedding, fetch_k, filter)
        if not found:
            return []
        vecs = np.stack([v for _, _, v in found])
        picked = maximal_marginal_relevance(_unit(embedding), vecs, lambda_mult=lambda_mult, k=k)
        return [found[i][0] for i in picked]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: Filter = None, **kwargs: Any) -> list[Document]:
        """MMR for a text query (see :meth:`max_marginal_relevance_search_by_vector`)."""
        return self.max_marginal_relevance_search_by_vector(self._embeddings.embed_query(query), k, fetch_k,
                                                            lambda_mult, filter)

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, folder: str | Path | None = None, **kwargs: Any
                   ) -> "CortexVectorStore":
        """A store in ``folder`` (required: cortex indexes live on disk) holding ``texts``."""
        if folder is None:
            raise RetrievalError("CortexVectorStore.from_texts needs folder=PATH: the index is kept on disk there.")
        store = cls.open(folder, embedding)
        store.add_texts(texts, metadatas, ids=ids)
        return store


class CortexRetriever(BaseRetriever):
    """A LangChain retriever doing cortex's search (hybrid BM25 + dense by default).

    ``k``, ``filter`` (as in :class:`CortexVectorStore`) and ``mode`` may also be given per call:
    ``retriever.invoke(q, k=1, filter={"lang": "en"})``. Each document's metadata is its own, plus
    the hit's score, citation and per-list ranks under the one key ``hit_key`` (None: left out).
    """

    index: Any
    k: int = 4
    mode: str = "hybrid"
    filter: Any = None
    hit_key: str | None = "cortex"
    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None, filter: Filter = None, mode: str | None = None
                                ) -> list[Document]:
        res = self.index.search(query, k=k or self.k, mode=mode or self.mode,
                                where=matcher(self.index, filter if filter is not None else self.filter))
        docs = []
        for h in res.hits:
            meta = self.index.metadata_of(h.chunk)
            if self.hit_key is not None:
                meta[self.hit_key] = {"score": h.score, "citation": h.chunk.citation or h.chunk.id, "ranks": h.ranks}
            docs.append(Document(id=h.chunk.id, page_content=h.chunk.text, metadata=meta))
        return docs
