"""BM25 (Okapi) over code and prose, with identifiers split the way people ask about them.

``load_tokenizer`` in a query should match ``def load_tokenizer`` and a chunk about "tokenizers";
so each identifier yields itself and its snake_case / camelCase parts, lower-cased, with a light
plural strip. Scores for all documents come from one sparse row-sum.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from cortex.errors import ConfigError

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*|\d+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
# Function words of questions; code keywords stay (a question may well ask about "class" or "return").
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i in is it its me of on or that the this to "
    "what when where which who why will with you your into there their than then so".split()
)


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def code_tokens(text: str) -> list[str]:
    """Lower-cased terms of ``text``: each identifier, plus its parts when it is compound."""
    out: list[str] = []
    for word in _WORD.findall(text):
        parts = [p for chunk in word.split("_") for p in _CAMEL.findall(chunk)]
        lower = word.lower().strip("_")
        if lower and lower not in STOPWORDS:
            out.append(_stem(lower))
        if len(parts) > 1:
            out.extend(_stem(p.lower()) for p in parts if len(p) > 1 and p.lower() not in STOPWORDS)
    return out


class BM25:
    """BM25 index over ``documents`` (texts) → scores ``(N,)`` per query.

    Args:
        k1: term-frequency saturation.
        b: length normalisation (0 = none, 1 = full).
    """

    def __init__(self, documents: Sequence[str], k1: float = 1.2, b: float = 0.75):
        if k1 < 0 or not 0 <= b <= 1:
            raise ConfigError(f"BM25 k1={k1} must be >= 0 and b={b} in [0, 1].")
        self.k1, self.b = k1, b
        self.n_docs = len(documents)
        self.vocab: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        lengths = np.zeros(self.n_docs, dtype=np.float64)
        for d, text in enumerate(documents):
            counts = Counter(code_tokens(text))
            lengths[d] = sum(counts.values())
            for term, tf in counts.items():
                rows.append(self.vocab.setdefault(term, len(self.vocab)))
                cols.append(d)
                tfs.append(tf)
        tf = np.asarray(tfs, dtype=np.float64)
        rows_a, cols_a = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        df = np.bincount(rows_a, minlength=len(self.vocab)).astype(np.float64)
        # Lucene's idf: always positive, so a term in most documents still counts a little.
        self.idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5))
        avgdl = lengths.mean() if self.n_docs else 0.0
        norm = k1 * (1 - b + b * lengths[cols_a] / max(avgdl, 1e-9))
        weight = self.idf[rows_a] * tf * (k1 + 1) / (tf + norm)
        self.weights = sparse.csr_matrix((weight, (rows_a, cols_a)), shape=(len(self.vocab), self.n_docs))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` → ``(N,)`` float64 (0 where no term matches)."""
        counts = Counter(t for t in code_tokens(query) if t in self.vocab)
        if not counts or not self.n_docs:
            return np.zeros(self.n_docs)
        terms = np.fromiter((self.vocab[t] for t in counts), dtype=np.int64)
        mult = np.fromiter(counts.values(), dtype=np.float64)
        return np.asarray(self.weights[terms].T @ mult).reshape(-1)

    def idf_of(self, term: str) -> float:
        """idf of a (tokenised) term, 0 if unseen."""
        i = self.vocab.get(term)
        return float(self.idf[i]) if i is not None else 0.0

