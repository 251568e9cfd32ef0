from __future__ import annotations

import numpy as np
import pytest

from cortex.errors import ConfigError
from cortex.retrieval.embedder import MiniLMEmbedder, TruncationWarning, minilm_path


def test_matches_sentence_transformers(embedder):
    """Our mean-pool + L2 of the packaged MiniLM equals sentence-transformers' own pipeline."""
    from sentence_transformers import SentenceTransformer

    texts = ["where are registry names validated", "def f(x): return x", "a", "Gaussian kernel lengthscale",
             "the quick brown fox " * 3]
    ours = embedder.embed(texts).vectors
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
