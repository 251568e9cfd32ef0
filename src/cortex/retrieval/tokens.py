"""Counting and cutting text by tokens, for prompt budgets and the short-term memory.

A worker's own tokenizer is the right ruler; any HF tokenizer fits :class:`HFTokenCounter`. The
default borrows the packaged MiniLM's WordPiece tokenizer, which is offline and fast; for code
and English it counts within about 10-20% of common BPE tokenizers, so budgets keep a margin.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens in a text and cuts a text to its first ``n`` tokens."""

    def count(self, text: str) -> int:
        """Tokens in ``text`` (no special tokens)."""
        ...

    def truncate(self, text: str, n: int) -> str:
        """The longest prefix of ``text`` that has at most ``n`` tokens."""
        ...


class HFTokenCounter:
    """A :class:`TokenCounter` over a HuggingFace fast tokenizer (uses its character offsets to cut)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    def truncate(self, text: str, n: int) -> str:
        if n <= 0:
            return ""
        enc = self.tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= n:
            return text
        return text[: offsets[n - 1][1]]


_DEFAULT: list[HFTokenCounter] = []


def default_token_counter() -> HFTokenCounter:
    """The shared counter over the packaged MiniLM tokenizer."""
    if not _DEFAULT:
        from cortex.retrieval.embedder import default_embedder

        _DEFAULT.append(HFTokenCounter(default_embedder().tokenizer))
    return _DEFAULT[0]
