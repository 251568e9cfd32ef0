"""Our index behind langchain-core's interfaces, used by a chain unchanged (no LLM: the chain ends at the prompt)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings, FakeEmbeddings
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

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
        return "\n\n".join(f"[{d.metadata['cortex']['citation']}]\n{d.page_content}" for d in docs)

    prompt = ChatPromptTemplate.from_messages([("system", "Answer from the context.\n{context}"), ("human", "{question}")])
    chain = {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()} | prompt
    value = chain.invoke("how is a file written atomically?")
    system, human = value.to_messages()
    assert human.content == "how is a file written atomically?"
    assert "[pkg/registry.py:L14-L21]" in system.content and "os.replace(tmp, path)" in system.content
    docs = retriever.invoke("gaussian kernel")
    assert docs[0].metadata["name"] == "gaussian_kernel" and docs[0].id
    assert len(retriever.invoke("gaussian kernel", k=1)) == 1  # invoke-time k wins over the constructor's
    only_md = retriever.invoke("gaussian kernel", k=3, filter={"kind": "section"})
    assert len(only_md) == 3 and {d.metadata["path"] for d in only_md} == {"GUIDE.md"}
    plain = CortexRetriever(index=index, k=2, hit_key=None).invoke("gaussian kernel")
    assert "cortex" not in plain[0].metadata and plain[0].metadata["name"] == "gaussian_kernel"


def test_vector_store_roundtrip(tmp_path, embedder):
    texts = ["The cat sat on the mat.", "Stock prices fell sharply today.", "A kitten naps on a rug.",
             "Interest rates rose again."]
    metas = [{"topic": "pets", "path": "a.txt"}, {"topic": "money"}, {"topic": "pets"}, {"topic": "money"}]
    store = CortexVectorStore.from_texts(texts, CortexEmbeddings(embedder), metadatas=metas, folder=tmp_path / "vs")
    assert isinstance(store, VectorStore)
    assert sorted((d.page_content, d.metadata["topic"]) for d in store.similarity_search("x", k=4)) == sorted(
        zip(texts, [m["topic"] for m in metas]))
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


def test_foreign_embeddings_are_recorded_and_a_different_one_refused(tmp_path):
    store = CortexVectorStore.open(tmp_path / "x", DeterministicFakeEmbedding(size=5))
    store.add_texts(["alpha", "beta"])
    pointer = json.loads((tmp_path / "x" / "collection.json").read_text())
    assert pointer["embedder"] == {"id": "langchain:langchain_core.embeddings.fake.DeterministicFakeEmbedding", "dim": 5}
    assert len(CortexVectorStore.open(tmp_path / "x", DeterministicFakeEmbedding(size=5)).index) == 2
    with pytest.raises(RetrievalError, match=r"built with embedder 'langchain:.*DeterministicFakeEmbedding' \(dim 5\).*"
                                             r"opened with 'langchain:.*DeterministicFakeEmbedding' \(dim 7\)"):
        CortexVectorStore.open(tmp_path / "x", DeterministicFakeEmbedding(size=7))
    with pytest.raises(RetrievalError, match=r"DeterministicFakeEmbedding.*opened with 'langchain:.*FakeEmbeddings'"):
        CortexVectorStore.open(tmp_path / "x", FakeEmbeddings(size=5))
    with pytest.raises(RetrievalError, match="folder"):
        CortexVectorStore.from_texts(["a"], CortexEmbeddings())


def test_metadata_round_trips_and_ids_are_fresh(tmp_path):
    store = CortexVectorStore.open(tmp_path / "vs", DeterministicFakeEmbedding(size=7))
    odd = {"kind": "note", "start_line": "n/a", "path": 3, "name": None, "file_hash": ["x"], "nested": {"a": [1, 2]}}
    ids = store.add_texts(["same text", "same text", "other"], [odd, {}, {"id": 1}])
    assert len(set(ids)) == 3 and all(uuid.UUID(i) for i in ids)  # id-less documents get fresh UUIDs
    docs = store.get_by_ids(ids)
    assert [d.metadata for d in docs] == [odd, {}, {"id": 1}]  # exactly as given, nothing added or read
    assert docs[0].page_content == docs[1].page_content == "same text"  # the same text twice is kept twice
    two = store.add_documents([Document("a"), Document("b")])  # two id-less documents in one call
    mixed = store.add_documents([Document("c", id="mine"), Document("d")])
    assert len(set(two)) == 2 and mixed[0] == "mine" and len(store.index) == 7
    assert store.similarity_search("same text", k=2, filter={"kind": "note"})[0].metadata == odd
    reopened = CortexVectorStore.open(tmp_path / "vs", DeterministicFakeEmbedding(size=7))
    assert reopened.get_by_ids(ids[:1])[0].metadata == odd


def test_search_by_vector_filter_and_mmr(tmp_path):
    emb = DeterministicFakeEmbedding(size=11)
    texts = [f"text {i}" for i in range(13)]
    metas = [{"parity": i % 2} for i in range(13)]
    store = CortexVectorStore.from_texts(texts, emb, metadatas=metas, ids=[str(i) for i in range(13)], folder=tmp_path / "v")
    q = emb.embed_query("text 4")
    assert store.similarity_search_by_vector(q, k=1)[0].id == "4"
    odd = store.similarity_search_by_vector(q, k=4, filter={"parity": 1})
    assert len(odd) == 4 and all(d.metadata["parity"] == 1 for d in odd)
    # Closed form: cosine of unit vectors, best first, over the odd documents only
    vecs = np.asarray(emb.embed_documents(texts))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cos = vecs @ (np.asarray(q) / np.linalg.norm(q))
    expected = [str(i) for i in np.argsort(-cos) if i % 2 == 1][:4]
    assert [d.id for d in odd] == expected
    scored = store.similarity_search_with_score_by_vector(q, k=2)
    assert scored[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [d.id for d in store.similarity_search_by_vector(q, k=3, filter=lambda d: d.id in {"1", "2"})] in (["1", "2"], ["2", "1"])
    # MMR: lambda 1 is plain relevance; the reference implementation agrees on the picks
    assert [d.id for d in store.max_marginal_relevance_search_by_vector(q, k=3, fetch_k=13, lambda_mult=1.0)] == \
        [str(i) for i in np.argsort(-cos)[:3]]
    top = np.argsort(-cos)[:8]
    ref = maximal_marginal_relevance(np.asarray(q), vecs[top], lambda_mult=0.3, k=4)
    got = store.max_marginal_relevance_search_by_vector(q, k=4, fetch_k=8, lambda_mult=0.3)
    assert [d.id for d in got] == [str(top[i]) for i in ref]
    assert all(d.metadata["parity"] == 0 for d in store.max_marginal_relevance_search_by_vector(q, k=3, filter={"parity": 0}))
