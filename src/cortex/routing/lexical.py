"""The router's lexical root: hashed word-piece unigrams and bigrams of the *whole* task text.

Why: the text root (MiniLM) is truncated to a few dozen tokens to decide within 10 ms, and a sentence
embedding blurs the rare subject words ("tort", "eigenvalue", "myocardial") that name a task's domain.
A bag of hashed n-grams over the full text keeps them at a cost of microseconds. The text is split by
the text root's own (fast, Rust) word-piece tokenizer, so sub-words stand in for character n-grams.

Each text becomes a bag of bucket ids ``0..num_buckets-1``: unigram ids as they are, bigram ids hashed
into the buckets above the vocabulary. The bag is weighted as TF-IDF (sublinear term frequency times
an IDF fitted on the training split, L2-normalized per text) and mapped by an ``EmbeddingBag`` of width
``dim`` and a linear layer to ``(B, 1, D)``, added at the trunk as the context root is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cortex.errors import ModelInputError

_BIGRAM_MULT = 1_000_003  # a prime: (a, b) and (b, a) land in different buckets


@dataclass
class LexicalBags:
    """Bags of a batch in CSR form: row ``i`` owns ``ids[offsets[i]:offsets[i+1]]`` with their ``counts``."""

    ids: torch.Tensor  # (N,) int64 bucket ids
    counts: torch.Tensor  # (N,) float32 occurrences in the text
    offsets: torch.Tensor  # (B + 1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def subset(self, idx: np.ndarray | torch.Tensor) -> LexicalBags:
        """The bags of rows ``idx`` (in that order)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        lengths = ends - starts
        offsets = torch.zeros(len(idx) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        # position of every kept element in the flat arrays
        pos = torch.repeat_interleave(starts - offsets[:-1], lengths) + torch.arange(int(offsets[-1]))
        return LexicalBags(self.ids[pos], self.counts[pos], offsets)


def hash_bags(token_ids: Sequence[Sequence[int]], vocab_size: int, num_buckets: int) -> LexicalBags:
    """Bags of hashed unigrams and bigrams for already tokenized texts (no special tokens)."""
    if num_buckets <= vocab_size:
        raise ModelInputError(f"lexical num_buckets={num_buckets} must exceed the vocabulary size {vocab_size}.")
    ids_out, counts_out, offsets = [], [], [0]
    span = num_buckets - vocab_size
    for toks in token_ids:
        t = np.asarray(toks, dtype=np.int64)
        bi = (t[:-1] * _BIGRAM_MULT + t[1:]) % span + vocab_size
        u, c = np.unique(np.concatenate([t, bi]), return_counts=True)
        ids_out.append(u)
        counts_out.append(c)
        offsets.append(offsets[-1] + len(u))
    flat = np.concatenate(ids_out) if ids_out else np.zeros(0, np.int64)
    cnt = np.concatenate(counts_out) if counts_out else np.zeros(0, np.int64)
    return LexicalBags(torch.from_numpy(flat), torch.from_numpy(cnt.astype(np.float32)),
                       torch.as_tensor(offsets, dtype=torch.long))


class LexicalRoot(nn.Module):
    """TF-IDF weighted hashed n-gram bag → ``(B, 1, out_dim)``.

    Args:
        num_buckets: hash buckets (unigram ids below the vocabulary size, bigrams above).
        dim: width of the bag embedding. out_dim: trunk width.

    The ``idf`` buffer is fitted on the training split by :meth:`fit_idf` and saved with the weights.
    """

    def __init__(self, num_buckets: int, dim: int, out_dim: int):
        super().__init__()
        self.num_buckets = num_buckets
        self.register_buffer("idf", torch.ones(num_buckets))
        self.bag = nn.EmbeddingBag(num_buckets, dim, mode="sum", sparse=True)  # a text touches a few dozen rows
        self.proj = nn.Linear(dim, out_dim)
        nn.init.normal_(self.bag.weight, std=0.1)

    @torch.no_grad()
    def fit_idf(self, bags: LexicalBags) -> None:
        """Smoothed IDF ``log((1 + n) / (1 + df)) + 1`` over the training bags (as scikit-learn's)."""
        df = torch.bincount(bags.ids, minlength=self.num_buckets).float()
        n = len(bags)
        self.idf.copy_(torch.log((1.0 + n) / (1.0 + df)) + 1.0)

    def weights(self, bags: LexicalBags) -> torch.Tensor:
        """Per-element TF-IDF weights, L2-normalized within each text."""
        w = (1.0 + torch.log(bags.counts.clamp(min=1.0))) * self.idf[bags.ids]
        row = torch.repeat_interleave(torch.arange(len(bags)), bags.offsets[1:] - bags.offsets[:-1])
        norm = torch.zeros(len(bags)).index_add_(0, row, w * w).sqrt().clamp(min=1e-9)
        return w / norm[row]

    def forward(self, bags: LexicalBags) -> torch.Tensor:
        if bags.ids.numel() and int(bags.ids.max()) >= self.num_buckets:
            raise ModelInputError(f"lexical bucket ids must be < {self.num_buckets}; hash with the router's own settings.")
        h = self.bag(bags.ids, bags.offsets[:-1], per_sample_weights=self.weights(bags))
        return self.proj(h)[:, None, :]  # (B, 1, D)
