"""Synthetic unit vectors with topic structure, for scale tests and the latency benchmark.

Real sentence embeddings are not uniform on the sphere: they gather around topics and subtopics.
Uniform random vectors have no neighbourhoods at all (every point is about equally far from every
other), which no approximate index can exploit, so they would measure nothing useful.
"""

from __future__ import annotations

import numpy as np


def clustered_vectors(n: int, dim: int, n_topics: int = 100, n_sub: int = 20, sub_scale: float = 0.6,
                      noise_scale: float = 0.6, seed: int = 0) -> np.ndarray:
    """``(n, dim)`` float32 unit vectors: topic centre + subtopic offset + noise, normalised.

    ``sub_scale`` and ``noise_scale`` are the norms of the subtopic offset and of the per-vector
    noise relative to the unit topic centre.
    """
    rng = np.random.default_rng(seed)

    def unit(shape: tuple[int, ...]) -> np.ndarray:
        x = rng.standard_normal(shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    topics = unit((n_topics, dim))
    subs = unit((n_topics, n_sub, dim)) * sub_scale
    t = rng.integers(0, n_topics, n)
    s = rng.integers(0, n_sub, n)
    x = topics[t] + subs[t, s] + unit((n, dim)) * noise_scale
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
