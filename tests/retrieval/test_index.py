"""The code index end to end with the real MiniLM on a tiny repository."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cortex.errors import ConfigError, RetrievalError
from cortex.retrieval.backend import register_backend
from cortex.retrieval.chunking import ChunkingConfig
from cortex.retrieval.embedder import MiniLMEmbedder, TruncationWarning
from cortex.retrieval.index import CodeIndex


def build(repo, folder, embedder):
    index = CodeIndex.open(folder, embedder, chunking=ChunkingConfig(max_file_bytes=4096))
    return index, index.update(repo)


def test_index_skips_and_reports_bad_files(built):
    index, report = built
    assert sorted(report.added) == ["GUIDE.md", "notes.txt", "pkg/mathutil.py", "pkg/registry.py"]
    assert report.skipped_counts() == {"binary": 1, "encoding": 1, "too_large": 1}  # __pycache__ is excluded
    reasons = {s.path: s.reason for s in report.skipped}
    assert reasons == {"weights.bin": "binary", "latin1.txt": "encoding", "big.log": "too_large"}
    assert "0xe9" in next(s.detail for s in report.skipped if s.reason == "encoding")
    assert report.chunks_total == len(index) == report.chunks_embedded
    # 4 python chunks + 2 functions + 4 markdown sections + text windows of notes (23 lines: 1-40 -> 1 window)
    assert len(index) == 4 + 2 + 4 + 1


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_finds_the_answering_function(built, mode):
    index, _ = built
    res = index.search("how do I write a file atomically with fsync", k=3, mode=mode)
    assert res.hits[0].chunk.name == "atomic_write"
    assert res.hits[0].chunk.citation == "pkg/registry.py:L14-L21"
    res = index.search("warmup schedule for the learning rate", k=3, mode=mode)
    assert res.hits[0].chunk.name == "learning_rate_schedule"


def test_hybrid_ranks_record_both_lists(built):
    index, _ = built
    hit = index.search("gaussian kernel lengthscale", k=1, mode="hybrid").hits[0]
    assert hit.chunk.name == "gaussian_kernel" and set(hit.ranks) == {"dense", "bm25"}
    f = index.fusion  # RRF by default: w_dense / (k + rank_dense) + w_bm25 / (k + rank_bm25)
    assert f.method == "rrf"
    assert hit.score == pytest.approx((1 - f.bm25_weight) / (f.rrf_k + hit.ranks["dense"])
                                      + f.bm25_weight / (f.rrf_k + hit.ranks["bm25"]))


def test_incremental_update(repo, tmp_path, embedder):
    index, _ = build(repo, tmp_path / "idx", embedder)
    before = dict(index.chunks)
    again = index.update(repo)
    assert again.chunks_embedded == 0 and len(again.unchanged) == 4

    math_py = repo / "pkg" / "mathutil.py"
    math_py.write_text(math_py.read_text().replace("Linear warmup", "Straight-line warmup"))
    (repo / "notes.txt").unlink()
    (repo / "NEW.md").write_text("# New\n\nBrand new page about tokenizers.\n")
    report = index.update(repo)
    assert report.changed == ["pkg/mathutil.py"] and report.removed == ["notes.txt"] and report.added == ["NEW.md"]
    # Only the edited function is embedded again (its neighbour kept its id) plus the new file's chunk.
    assert report.chunks_embedded == 2
    assert not any(c.path == "notes.txt" for c in index.chunks.values())
    kept = [c for c in index.chunks.values() if c.name == "gaussian_kernel"][0]
    assert kept.id in before and kept.file_hash != before[kept.id].file_hash  # same vector, fresh hash
    assert index.search("straight-line warmup", k=1, mode="bm25").hits[0].chunk.name == "learning_rate_schedule"


def test_reopen_and_refuse_other_embedder_or_root(repo, tmp_path, embedder):
    folder = tmp_path / "idx"
    index, _ = build(repo, folder, embedder)
    q = "refuse names that escape their folder"
    expected = index.search(q, k=4).hits
    reopened = CodeIndex.open(folder, embedder, create=False)
    got = reopened.search(q, k=4).hits
    assert [h.chunk.id for h in got] == [h.chunk.id for h in expected]
    assert [h.score for h in got] == pytest.approx([h.score for h in expected])
    with pytest.raises(RetrievalError, match=r"built with embedder 'all-MiniLM-L6-v2/mean-l2/max256'.*max128"):
        CodeIndex.open(folder, MiniLMEmbedder(max_tokens=128))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(RetrievalError, match="--rebuild"):
        reopened.update(other)
    report = reopened.update(other, rebuild=True)
    assert len(reopened) == 0 and len(report.removed) == 0
    with pytest.raises(RetrievalError, match="No code-index"):
        CodeIndex.open(tmp_path / "missing", embedder, create=False)


def test_long_query_is_truncated_and_said(built):
    index, _ = built
    with pytest.warns(TruncationWarning):
        res = index.search("atomic write " * 200, k=2, mode="hybrid")
    assert res.truncated and res.query_tokens > 256
    assert res.hits[0].chunk.name == "atomic_write"


def test_bad_queries(built):
    index, _ = built
    with pytest.raises(RetrievalError, match="Empty query"):
        index.search("  ")
    with pytest.raises(ConfigError, match="mode"):
        index.search("x", mode="sparse")


class DictBackend:
    """A second real backend (a plain dict, exact search), standing in for a server vector database."""

    def __init__(self, dim):
        self.dim, self.rows = dim, {}

    def __len__(self):
        return len(self.rows)

    def upsert(self, ids, vectors):
        self.rows.update({i: np.asarray(v, np.float32) for i, v in zip(ids, vectors)})

    def delete(self, ids):
        for i in ids:
            self.rows.pop(i, None)

    def search(self, query, k):
        scored = sorted(((float(v @ query), i) for i, v in self.rows.items()), reverse=True)[:k]
        return [(i, s) for s, i in scored]

    def fetch(self, ids):
        return np.stack([self.rows[i] for i in ids])

    def commit(self, folder, generation):
        np.savez(folder / f"dict.g{generation}.npz", ids=np.array(list(self.rows)),
                 vecs=np.stack(list(self.rows.values())) if self.rows else np.zeros((0, self.dim)))
        return {"name": "dict", "file": f"dict.g{generation}.npz"}


def _open_dict(folder, state, dim):
    b = DictBackend(dim)
    if state is not None:
        z = np.load(folder / state["file"])
        b.upsert(z["ids"].tolist(), z["vecs"])
    return b


def test_backend_protocol_replaces_the_default(repo, tmp_path, embedder):
    register_backend("dict", _open_dict)
    folder = tmp_path / "idx"
    index = CodeIndex.open(folder, embedder, backend="dict", chunking=ChunkingConfig(max_file_bytes=4096))
    index.update(repo)
    assert isinstance(index.collection.backend, DictBackend)
    reopened = CodeIndex.open(folder, embedder)
    assert isinstance(reopened.collection.backend, DictBackend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reopened.search("gaussian kernel", k=1, mode="dense").hits[0].chunk.name == "gaussian_kernel"


def test_index_folder_inside_the_root_is_not_indexed(repo, embedder):
    index = CodeIndex.open(repo / "idx", embedder, chunking=ChunkingConfig(max_file_bytes=4096))
    index.update(repo)
    index.update(repo)  # the first commit wrote files under repo/idx; they must not be picked up
    assert not any(c.path.startswith("idx/") for c in index.chunks.values())
    with pytest.raises(RetrievalError, match="is the folder being indexed"):
        CodeIndex.open(repo, embedder).update(repo)


def test_reserved_index_names():
    from cortex.retrieval.index import default_index_dir

    assert default_index_dir("repo").parts[-2:] == ("rag", "repo")
    with pytest.raises(ConfigError, match="choose another --name"):
        default_index_dir("templates")
