"""The embedded backend on FAISS: exact search, IVF recall against exact at scale (synthetic vectors), persistence."""

from __future__ import annotations

import numpy as np
import pytest

from cortex.errors import ConfigError, RetrievalError
from cortex.retrieval import ann
from cortex.retrieval.ann import top_k
from cortex.retrieval.backend import EmbeddedBackend, EmbeddedConfig, open_backend
from cortex.retrieval.synthetic import clustered_vectors


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_top_k_and_flat_search_match_argsort():
    rng = np.random.default_rng(0)
    v, q = unit(rng, 101, 13), unit(rng, 1, 13)[0]
    ref = np.argsort(-(v @ q))[:7]
    assert top_k(v @ q, 7).tolist() == ref.tolist()
    assert top_k(np.array([3.0, 1.0]), 5).tolist() == [0, 1]
    index = ann.flat_index(13)
    index.add_with_ids(v, np.arange(101, dtype=np.int64) * 3)  # caller-chosen labels come back
    scores, labels = ann.search(index, q[None], 7)
    assert (labels[0] // 3).tolist() == ref.tolist()
    np.testing.assert_allclose(scores[0], (v @ q)[ref], rtol=1e-5)


def test_ivf_probing_every_cell_is_exact_and_calibration_reaches_target():
    rng = np.random.default_rng(1)
    x = clustered_vectors(2_003, 11, n_topics=7, n_sub=5, seed=1)
    index = ann.train_ivf(x[rng.choice(2_003, 400, replace=False)], nlist=13, iters=5, seed=0)
    index.add_with_ids(x, np.arange(2_003, dtype=np.int64))
    assert ann.n_cells(index) == 13 and ann.n_cells(ann.flat_index(11)) == 0
    q = unit(rng, 5, 11)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :5]
    assert ann.search(index, q, 5, nprobe=13)[1].tolist() == exact.tolist()
    nprobe, reached = ann.calibrate_nprobe(index, x, target_recall=0.9)
    assert reached >= 0.9 and index.nprobe == nprobe and 1 <= nprobe <= 13
    index.remove_ids(np.arange(0, 2_003, 2, dtype=np.int64))  # removal is real: no even label comes back
    assert not (ann.search(index, q, 20, nprobe=13)[1] % 2 == 0).any()
    np.testing.assert_allclose(index.reconstruct_batch(np.array([1, 7], dtype=np.int64)), x[[1, 7]])


def test_upsert_replace_delete_exact():
    rng = np.random.default_rng(2)
    b = EmbeddedBackend(5)
    v = unit(rng, 11, 5)
    b.upsert([f"id{i}" for i in range(11)], v)
    assert len(b) == 11 and not b.uses_ivf
    assert b.search(v[3], 1)[0][0] == "id3"
    b.upsert(["id3"], v[4:5])  # replace: id3 now points where id4 does
    assert len(b) == 11
    assert {i for i, _ in b.search(v[4], 2)} == {"id3", "id4"}
    b.delete(["id4", "nope"])
    assert len(b) == 10 and [i for i, _ in b.search(v[4], 1)] == ["id3"]
    np.testing.assert_allclose(b.fetch(["id3"])[0], v[4])
    with pytest.raises(RetrievalError, match="expected"):
        b.upsert(["x"], unit(rng, 1, 7))
    with pytest.raises(RetrievalError, match="Duplicate"):
        b.upsert(["x", "x"], unit(rng, 2, 5))


def test_ivf_recall_at_scale_and_persistence(tmp_path):
    """11k clustered vectors above a 3k threshold: IVF recall@10 >= 0.95 against exact, on held-out queries."""
    x = clustered_vectors(11_100, 48, n_topics=50, n_sub=20, noise_scale=1.0, seed=3)
    data, queries = x[:11_000], x[11_000:]
    b = EmbeddedBackend(48, EmbeddedConfig(ann_threshold=3_000, seed=0))
    ids = [f"v{i}" for i in range(11_000)]
    b.upsert(ids[:10_000], data[:10_000])
    b.refresh()
    assert b.uses_ivf and ann.n_cells(b._index) == 200 and b.n_trained == 10_000
    b.upsert(ids[10_000:], data[10_000:])  # added into the trained cells; no retraining below 2x
    b.delete(ids[:100])
    hits = 0
    for q in queries:
        approx = {i for i, _ in b.search(q, 10)}
        exact = {i for i, _ in b.search(q, 10, exact=True)}
        assert not approx & set(ids[:100])
        hits += len(approx & exact)
    assert hits / (10 * len(queries)) >= 0.95
    nprobe, reached = b.last_calibration
    assert reached >= 0.97 and 1 <= nprobe < 200 and b.n_trained == 10_000

    b.delete(ids[100:3_000])  # over a fifth of the labels dead: renumbered into the same cells
    b.refresh()
    assert len(b._labels) == len(b) == 8_000 and b._index.nprobe == nprobe
    np.testing.assert_allclose(b.fetch(["v5000"])[0], data[5000])
    b.upsert(ids[100:3_000], data[100:3_000])

    state = b.commit(tmp_path, 1)
    again = open_backend("embedded", tmp_path, state, 48)
    assert len(again) == len(b) == 10_900
    for q in queries[:20]:
        assert again.search(q, 10) == b.search(q, 10)
    np.testing.assert_allclose(again.fetch(["v142", "v10999"]), data[[142, 10_999]])


def test_older_index_format_is_refused_with_the_fix(tmp_path):
    state = {"name": "embedded", "dim": 4, "count": 1, "files": {"vectors": "vectors.g1.npy", "ids": "ids.g1.json"}}
    with pytest.raises(RetrievalError, match="older cortex.*--rebuild"):
        open_backend("embedded", tmp_path, state, 4)
    (tmp_path / "v.faiss").write_bytes(b"not a faiss file")
    (tmp_path / "i.json").write_text("[]")
    state["files"] = {"index": "v.faiss", "ids": "i.json"}
    with pytest.raises(RetrievalError, match="missing or corrupt"):
        open_backend("embedded", tmp_path, state, 4)


def test_small_collections_search_exactly_after_shrinking():
    rng = np.random.default_rng(4)
    b = EmbeddedBackend(7, EmbeddedConfig(ann_threshold=50))
    v = unit(rng, 97, 7)
    b.upsert([str(i) for i in range(97)], v)
    b.refresh()
    assert ann.n_cells(b._index) > 0
    b.delete([str(i) for i in range(60)])
    q = v[80]
    assert b.search(q, 3) == b.search(q, 3, exact=True)
    assert ann.n_cells(b._index) == 0 and b.n_trained == 0  # 37 left: back to exact search


def test_config_validation():
    with pytest.raises(ConfigError, match="target_recall.*nprobe|nprobe.*target_recall"):
        EmbeddedConfig(target_recall=1.5, nprobe=0)  # every problem at once
    with pytest.raises(ConfigError, match="backend"):
        open_backend("qdrant-not-installed", None, None, 3)
