"""The embedded backend: exact search, IVF recall against exact at scale (synthetic vectors), persistence."""

from __future__ import annotations

import numpy as np
import pytest

from cortex.errors import ConfigError, RetrievalError
from cortex.retrieval.ann import IVFLayout, exact_search, sort_by_cell, spherical_kmeans, top_k
from cortex.retrieval.backend import EmbeddedBackend, EmbeddedConfig, open_backend
from cortex.retrieval.synthetic import clustered_vectors


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_top_k_and_exact_search_match_argsort():
    rng = np.random.default_rng(0)
    v, q = unit(rng, 101, 13), unit(rng, 1, 13)[0]
    idx, scores = exact_search(v, q, 7)
    ref = np.argsort(-(v @ q))[:7]
    assert idx.tolist() == ref.tolist()
    np.testing.assert_allclose(scores, (v @ q)[ref], rtol=1e-6)
    assert top_k(np.array([3.0, 1.0]), 5).tolist() == [0, 1]


def test_kmeans_cells_and_offsets():
    rng = np.random.default_rng(1)
    x = unit(rng, 211, 11)
    c = spherical_kmeans(x, 7, iters=5)
    assert c.shape == (7, 11)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
    cells = (x @ c.T).argmax(1)
    order, offsets = sort_by_cell(cells, 7)
    assert offsets[0] == 0 and offsets[-1] == 211
    for cell in range(7):  # each cell's slice holds exactly that cell's rows
        assert set(order[offsets[cell] : offsets[cell + 1]].tolist()) == set(np.flatnonzero(cells == cell).tolist())
    # probing every cell is exact search
    layout = IVFLayout(c, offsets, nprobe=7, n_trained=211)
    q = unit(rng, 1, 11)[0]
    rows, _ = layout.search(x[order], q, 5)
    assert order[rows].tolist() == exact_search(x, q, 5)[0].tolist()


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
    assert b.uses_ivf and b._ivf is not None
    b.upsert(ids[10_000:], data[10_000:])  # the tail: searched exactly until the next refresh
    assert b._ivf.n_sorted == 10_000
    b.delete(ids[:100])
    hits = 0
    for q in queries:
        approx = {i for i, _ in b.search(q, 10)}
        exact = {i for i, _ in b.search(q, 10, exact=True)}
        assert not approx & set(ids[:100])
        hits += len(approx & exact)
    assert hits / (10 * len(queries)) >= 0.95
    nprobe, reached = b.last_calibration
    assert reached >= 0.97 and 1 <= nprobe < b._ivf.centroids.shape[0]

    state = b.commit(tmp_path, 1)
    again = open_backend("embedded", tmp_path, state, 48)
    assert len(again) == len(b) == 10_900
    for q in queries[:20]:
        assert again.search(q, 10) == b.search(q, 10)


def test_small_collections_search_exactly_after_shrinking():
    rng = np.random.default_rng(4)
    b = EmbeddedBackend(7, EmbeddedConfig(ann_threshold=50))
    v = unit(rng, 97, 7)
    b.upsert([str(i) for i in range(97)], v)
    b.refresh()
    assert b._ivf is not None
    b.delete([str(i) for i in range(60)])
    q = v[80]
    assert b.search(q, 3) == b.search(q, 3, exact=True)
    assert b._ivf is None  # 37 left: back to exact search


def test_config_validation():
    with pytest.raises(ConfigError, match="target_recall"):
        EmbeddedConfig(target_recall=1.5)
    with pytest.raises(ConfigError, match="backend"):
        open_backend("qdrant-not-installed", None, None, 3)
