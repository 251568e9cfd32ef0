"""BM25 (Okapi) over code and prose, with identifiers split the way people ask about them.

``load_tokenizer`` in a query should match ``def load_tokenizer`` and a chunk about "tokenizers";
so each identifier yields itself and its snake_case / camelCase parts, lower-cased, with a light
plural strip. The scoring engine is ``bm25s``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

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
    """BM25 (Lucene variant, on ``bm25s``) over ``documents`` (texts) → scores ``(N,)`` per query.

    Tokens are :func:`code_tokens`; the scoring is bm25s's: ``idf · tf / (tf + k1·(1 − b + b·dl/avgdl))``
    with Lucene's always-positive idf ``log(1 + (N − df + 0.5)/(df + 0.5))``. (Classic Okapi
    multiplies by ``k1 + 1``, a constant that changes no ranking.) ``benchmarks/rag_eval.py
    --bm25-engines`` found the same top-10 as cortex's former sparse-matrix BM25 on every question
    and 2.7x faster queries, so that one was deleted.

    Args:
        k1: term-frequency saturation.
        b: length normalisation (0 = none, 1 = full).
    """

    def __init__(self, documents: Sequence[str], k1: float = 1.2, b: float = 0.75):
        if k1 < 0 or not 0 <= b <= 1:
            raise ConfigError(f"BM25 k1={k1} must be >= 0 and b={b} in [0, 1].")
        import bm25s

        self.k1, self.b = k1, b
        self.n_docs = len(documents)
        self._model = bm25s.BM25(k1=k1, b=b, method="lucene")
        if self.n_docs:
            self._model.index([code_tokens(text) for text in documents], show_progress=False)
        self.vocab: dict[str, int] = self._model.vocab_dict if self.n_docs else {}

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` → ``(N,)`` float64 (0 where no term matches)."""
        terms = [t for t in code_tokens(query) if t in self.vocab]
        if not terms or not self.n_docs:
            return np.zeros(self.n_docs)
        return np.asarray(self._model.get_scores(terms), dtype=np.float64)
