"""cortex retrieval behind LangChain's interfaces, so existing chains use it unchanged.

- :class:`CortexEmbeddings` is a ``langchain_core`` ``Embeddings`` over any cortex embedder.
- :class:`CortexVectorStore` is a ``VectorStore`` over a :class:`~cortex.retrieval.index.CodeIndex`
  (dense similarity with cosine scores; ``as_retriever()`` works, MMR included).
- :class:`CortexRetriever` is a ``BaseRetriever`` doing cortex's hybrid (BM25 + dense) search.

Documents carry the chunk's path, lines, kind and name in ``metadata`` and its id in ``id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict

from cortex.errors import RetrievalError
from cortex.retrieval.chunking import Chunk
from cortex.retrieval.embedder import Embedder, default_embedder
from cortex.retrieval.index import CodeIndex


class CortexEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over a cortex :class:`~cortex.retrieval.embedder.Embedder` (MiniLM by default)."""

    def __init__(self, embedder: Embedder | None = None):
        self.embedder = embedder or default_embedder()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(texts, warn=False).vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed([text]).vectors[0].tolist()


def _unwrap(embedding: Embeddings | Embedder | None) -> Embedder:
    if embedding is None:
        return default_embedder()
    if isinstance(embedding, CortexEmbeddings):
        return embedding.embedder
    if isinstance(embedding, Embedder):
        return embedding
    raise RetrievalError(
        f"CortexVectorStore needs a cortex embedder (its id is recorded in the index); got "
        f"{type(embedding).__name__}. Wrap a cortex embedder: CortexEmbeddings(MiniLMEmbedder())."
    )


class CortexVectorStore(VectorStore):
    """A LangChain ``VectorStore`` over a cortex :class:`CodeIndex` (persisted in its folder)."""

    def __init__(self, index: CodeIndex):
        self.index = index
        self._embeddings = CortexEmbeddings(index.collection.embedder)

    @classmethod
    def open(cls, folder: str | Path, embedding: Embeddings | Embedder | None = None) -> "CortexVectorStore":
        """Open (or create) the index in ``folder`` as a vector store."""
        return cls(CodeIndex.open(folder, _unwrap(embedding)))

    @property
    def embeddings(self) -> Embeddings:
        return self._embeddings

    def _document(self, chunk: Chunk) -> Document:
        return Document(id=chunk.id, page_content=chunk.text, metadata=self.index.metadata_of(chunk))

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Embed and store ``texts`` (committed to disk), returning their ids."""
        out = self.index.add_texts(list(texts), metadatas, ids)
        self.index.save()
        return out

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete ``ids`` (all documents when None) and commit."""
        self.index.delete(list(self.index.chunks) if ids is None else ids)
        self.index.save()
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [self._document(self.index.chunks[i]) for i in ids if i in self.index.chunks]

    def _where(self, filter: dict[str, Any] | None):  # noqa: A002 - LangChain's keyword
        if not filter:
            return None
        return lambda c: all(self.index.metadata_of(c).get(k) == v for k, v in filter.items())

    def similarity_search_with_score(self, query: str, k: int = 4, filter: dict[str, Any] | None = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """Top-``k`` documents with cosine similarity (1 = same direction); ``filter`` matches metadata exactly."""
        res = self.index.search(query, k=k, mode="dense", where=self._where(filter))
        return [(self._document(h.chunk), h.score) for h in res.hits]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        pairs = self.index.collection.backend.search(np.asarray(embedding, dtype=np.float32), k)
        return [self._document(self.index.chunks[i]) for i, _ in pairs]

    def _select_relevance_score_fn(self):
        # Scores are cosine similarities in [-1, 1]; map them to LangChain's [0, 1] relevance.
        return lambda score: (score + 1.0) / 2.0

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      **kwargs: Any) -> list[Document]:
        """MMR over the ``fetch_k`` dense neighbours: relevance against redundancy, ``lambda_mult`` = 1 is pure relevance."""
        from langchain_core.vectorstores.utils import maximal_marginal_relevance

        res = self.index.search(query, k=fetch_k, mode="dense", where=self._where(kwargs.get("filter")))
        if not res.hits:
            return []
        ids = [h.chunk.id for h in res.hits]
        vecs = self.index.collection.vectors(ids)
        q = np.asarray(self._embeddings.embed_query(query), dtype=np.float32)
        picked = maximal_marginal_relevance(q, vecs, lambda_mult=lambda_mult, k=k)
        return [self._document(res.hits[i].chunk) for i in picked]

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
    """A LangChain retriever doing cortex's search (hybrid BM25 + dense by default)."""

    index: Any
    k: int = 4
    mode: str = "hybrid"
    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun
                                ) -> list[Document]:
        res = self.index.search(query, k=self.k, mode=self.mode)
        return [Document(id=h.chunk.id, page_content=h.chunk.text,
                         metadata={**self.index.metadata_of(h.chunk), "score": h.score, "citation": h.chunk.citation})
                for h in res.hits]
