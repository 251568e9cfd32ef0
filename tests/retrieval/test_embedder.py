from __future__ import annotations

import numpy as np
import pytest

from cortex.errors import ConfigError
from cortex.retrieval.embedder import MiniLMEmbedder, TruncationWarning, minilm_path, native_bf16

TEXTS = ["where are registry names validated", "def f(x): return x", "a", "Gaussian kernel lengthscale",
         "the quick brown fox " * 3]


@pytest.fixture(scope="module")
def fp32():
    return MiniLMEmbedder(precision="fp32")


def test_matches_sentence_transformers(fp32):
    """Our mean-pool + L2 of the packaged MiniLM (in float32) equals sentence-transformers' own pipeline."""
    from sentence_transformers import SentenceTransformer

    texts = TEXTS
    ours = fp32.embed(texts).vectors
    ref = SentenceTransformer(minilm_path(), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (5, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_truncation_is_reported(embedder):
    long = "registry " * 400
    with pytest.warns(TruncationWarning, match="256 tokens"):
        out = embedder.embed(["short", long])
    assert out.truncated.tolist() == [False, True]
    assert out.n_tokens[1] == 402  # 400 words, one token each, plus [CLS] and [SEP]
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, rtol=1e-5)


def test_ids_differ_by_limit_and_limits_are_checked():
    assert MiniLMEmbedder(max_tokens=128).id != MiniLMEmbedder().id
    with pytest.raises(ConfigError, match="max_tokens"):
        MiniLMEmbedder(max_tokens=1000)


def test_bf16_vectors_match_fp32(fp32):
    """bfloat16 autocast changes the vectors only by rounding: cosine > 0.999 to float32, also at the limit."""
    texts = [*TEXTS, "def update(self, root):\n    " + "index.add(chunk) " * 150]  # > 256 tokens: truncated
    bf16 = MiniLMEmbedder(precision="bf16")
    assert bf16.uses_bf16 and not fp32.uses_bf16
    got, ref = bf16.embed(texts, warn=False), fp32.embed(texts, warn=False)
    assert got.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got.vectors, axis=1), 1.0, rtol=1e-5)
    assert (got.vectors * ref.vectors).sum(1).min() > 0.999
    assert got.truncated.tolist() == ref.truncated.tolist() == [False] * 5 + [True]
    assert bf16.id == fp32.id  # interchangeable: an index built with one is searched with the other


def test_auto_precision_follows_the_cpu():
    assert MiniLMEmbedder().uses_bf16 == native_bf16("cpu")
    assert not native_bf16("cuda")  # auto means bf16 only on a CPU that has the instructions


def test_every_bad_setting_is_reported_at_once():
    with pytest.raises(ConfigError, match="2 problems") as err:
        MiniLMEmbedder(max_tokens=1000, precision="fp16")
    assert {p.field for p in err.value.problems} == {"max_tokens", "precision"}


def test_workers_split_batches_without_changing_vectors(fp32):
    """Whole batches on two worker threads give the vectors of one thread, and leave the caller's thread count."""
    import threading

    import torch

    texts = [f"def f{i}(x): return x + {i}" * (1 + i % 5) for i in range(10)]
    one = MiniLMEmbedder(precision="fp32", batch_size=4, workers=1)
    two = MiniLMEmbedder(precision="fp32", batch_size=4, workers=2)
    one._model = two._model = fp32._load_model()  # the same weights; only the scheduling differs
    assert [len(b) for b in two._batches([1] * 10, 2)] == [4, 4, 2]
    assert [len(b) for b in two._batches([1] * 6, 2)] == [3, 3]  # every worker gets a batch
    before = torch.get_num_threads()
    np.testing.assert_allclose(two.embed(texts).vectors, one.embed(texts).vectors, atol=1e-6)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert torch.get_num_threads() == before and seen == [before]
    with pytest.raises(ConfigError, match="workers=0"):
        MiniLMEmbedder(workers=0)
