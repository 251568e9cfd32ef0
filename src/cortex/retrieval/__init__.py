"""Retrieval for workers: a code/doc index (BM25 + dense, fused), prompt templates, context, memory.

Public names load lazily so that importing a submodule (or ``cortex --help``) does not pull in
numpy/scipy/torch before they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Chunk": "chunking", "ChunkingConfig": "chunking", "chunk_file": "chunking",
    "Embedder": "embedder", "EmbeddingBatch": "embedder", "MiniLMEmbedder": "embedder",
    "TruncationWarning": "embedder", "default_embedder": "embedder",
    "VectorBackend": "backend", "EmbeddedBackend": "backend", "EmbeddedConfig": "backend",
    "register_backend": "backend",
    "BM25": "bm25", "reciprocal_rank_fusion": "fusion", "relative_score_fusion": "fusion", "FusionConfig": "fusion",
    "CodeIndex": "index", "IndexUpdate": "index", "SearchHit": "index", "SearchResult": "index",
    "default_index_dir": "index", "SEARCH_MODES": "index",
    "TemplateStore": "templates", "TemplateVersion": "templates",
    "ContextConfig": "context", "WorkerContext": "context", "build_context": "context",
    "ShortTermMemory": "memory", "LongTermMemory": "memory", "TaskRecord": "memory", "MemoryHit": "memory",
    "knn_vote": "memory",
    "TokenCounter": "tokens", "HFTokenCounter": "tokens",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cortex.retrieval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cortex.retrieval.{_EXPORTS[name]}"), name)
