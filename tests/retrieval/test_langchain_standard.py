"""LangChain's own conformance suites (``langchain-tests``) run against cortex's adapters.

The vector store and the retriever run on the suite's deterministic fake embeddings (a foreign
``Embeddings``, 6 dims); the embeddings suites run on cortex's packaged MiniLM.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests

from cortex.retrieval.langchain import CortexEmbeddings, CortexRetriever, CortexVectorStore

# The suites' async tests are unmarked coroutines (LangChain's own packages run pytest-asyncio in auto
# mode); mark just those for pytest-asyncio, a dependency of langchain-tests, leaving the sync ones alone.
for _suite in (VectorStoreIntegrationTests, RetrieversIntegrationTests, EmbeddingsIntegrationTests):
    for _name, _test in vars(_suite).items():
        if _name.startswith("test_") and inspect.iscoroutinefunction(_test) and not hasattr(_test, "pytestmark"):
            pytest.mark.asyncio(_test)


class TestCortexVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, tmp_path) -> Iterator[VectorStore]:
        """An empty store in a fresh folder, on the suite's own embeddings."""
        yield CortexVectorStore.open(tmp_path / "store", self.get_embeddings())


DOCS = [
    "A gaussian kernel measures similarity between two points.",
    "The learning rate warms up linearly and then decays.",
    "Registry names are validated before a folder is created.",
    "Atomic writes go through a temporary file and a rename.",
    "The kernel trick maps inputs to a feature space.",
]


class TestCortexRetriever(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True, scope="class")
    def _store(self, request, tmp_path_factory):
        store = CortexVectorStore.open(tmp_path_factory.mktemp("retriever") / "store", DeterministicFakeEmbedding(size=6))
        store.add_texts(DOCS)
        request.cls.index = store.index

    @property
    def retriever_constructor(self) -> type[CortexRetriever]:
        return CortexRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"index": self.index}

    @property
    def retriever_query_example(self) -> str:
        return "what does a kernel measure"


class TestCortexEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[CortexEmbeddings]:
        return CortexEmbeddings


class TestCortexEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[CortexEmbeddings]:
        return CortexEmbeddings
