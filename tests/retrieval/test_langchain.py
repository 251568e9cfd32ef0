"""Our index behind langchain-core's interfaces, used by a chain unchanged (no LLM: the chain ends at the prompt)."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import VectorStore

from cortex.errors import RetrievalError
from cortex.retrieval.langchain import CortexEmbeddings, CortexRetriever, CortexVectorStore


def test_embeddings_are_ours(embedder):
    emb = CortexEmbeddings(embedder)
    assert isinstance(emb, Embeddings)
    docs = emb.embed_documents(["alpha", "beta gamma"])
    q = emb.embed_query("alpha")
    np.testing.assert_allclose(docs, embedder.embed(["alpha", "beta gamma"]).vectors, atol=1e-6)
    np.testing.assert_allclose(q, docs[0], atol=1e-5)  # padding to the batch's width moves the last digits


def test_retriever_in_a_chain(built):
    index, _ = built
    retriever = CortexRetriever(index=index, k=2)
    assert isinstance(retriever, BaseRetriever)

    def format_docs(docs: list[Document]) -> str:
        return "\n\n".join(f"[{d.metadata['citation']}]\n{d.page_content}" for d in docs)

    prompt = ChatPromptTemplate.from_messages([("system", "Answer from the context.\n{context}"), ("human", "{question}")])
    chain = {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()} | prompt
    value = chain.invoke("how is a file written atomically?")
    system, human = value.to_messages()
    assert human.content == "how is a file written atomically?"
    assert "[pkg/registry.py:L14-L21]" in system.content and "os.replace(tmp, path)" in system.content
    docs = retriever.invoke("gaussian kernel")
    assert docs[0].metadata["name"] == "gaussian_kernel" and docs[0].id


def test_vector_store_roundtrip(tmp_path, embedder):
    texts = ["The cat sat on the mat.", "Stock prices fell sharply today.", "A kitten naps on a rug.",
             "Interest rates rose again."]
    metas = [{"topic": "pets", "path": "a.txt"}, {"topic": "money"}, {"topic": "pets"}, {"topic": "money"}]
    store = CortexVectorStore.from_texts(texts, CortexEmbeddings(embedder), metadatas=metas, folder=tmp_path / "vs")
    assert isinstance(store, VectorStore)
    hits = store.similarity_search_with_score("a sleeping cat", k=2)
    assert [d.page_content for d, _ in hits] == [texts[2], texts[0]] or [d.page_content for d, _ in hits] == [texts[0], texts[2]]
    q = np.asarray(store.embeddings.embed_query("a sleeping cat"))
    d0 = hits[0][0]
    assert hits[0][1] == pytest.approx(float(q @ np.asarray(store.embeddings.embed_query(d0.page_content))), abs=1e-5)
    assert store.similarity_search("markets", k=1, filter={"topic": "money"})[0].metadata["topic"] == "money"
    assert store.similarity_search("a sleeping cat", k=1, filter={"topic": "money"})[0].metadata["topic"] == "money"
    rel = store.similarity_search_with_relevance_scores("a sleeping cat", k=4)
    assert all(0.0 <= s <= 1.0 for _, s in rel)
    # MMR with lambda 0 prefers diversity: the second pick is not the other pet sentence
    mmr = store.max_marginal_relevance_search("a sleeping cat", k=2, fetch_k=4, lambda_mult=0.0)
    assert mmr[0].metadata["topic"] == "pets" and mmr[1].metadata["topic"] == "money"
    by_vec = store.similarity_search_by_vector(store.embeddings.embed_query("rates"), k=1)
    assert by_vec[0].page_content == texts[3]

    retriever = store.as_retriever(search_kwargs={"k": 1})
    assert retriever.invoke("falling stocks")[0].page_content == texts[1]

    reopened = CortexVectorStore.open(tmp_path / "vs", embedder)  # persisted on disk
    ids = [d.id for d in reopened.similarity_search("cat", k=4)]
    assert len(ids) == 4 and reopened.get_by_ids(ids[:1])[0].id == ids[0]
    reopened.delete([ids[0]])
    assert len(CortexVectorStore.open(tmp_path / "vs", embedder).index) == 3


def test_store_needs_a_cortex_embedder(tmp_path):
    class Other(Embeddings):
        def embed_documents(self, texts):
            return [[1.0, 0.0] for _ in texts]

        def embed_query(self, text):
            return [1.0, 0.0]

    with pytest.raises(RetrievalError, match="cortex embedder"):
        CortexVectorStore.open(tmp_path / "x", Other())
    with pytest.raises(RetrievalError, match="folder"):
        CortexVectorStore.from_texts(["a"], CortexEmbeddings())
