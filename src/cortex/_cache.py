"""Keys of cortex's disk caches.

Both feature caches (the router's text-root features and the lenses' pooled activations) store one
row per distinct text under a folder named for the encoder that computed it; within that folder a
row is found by the sha256 of the text's UTF-8 bytes. One definition keeps the two caches (and any
later one) from drifting apart.
"""

from __future__ import annotations

import hashlib

__all__ = ["text_digest", "text_key"]


def text_digest(text: str) -> bytes:
    """The 32-byte sha256 digest of ``text`` (UTF-8): the key of a cached row, as bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def text_key(text: str) -> str:
    """:func:`text_digest` as 64 hex characters, for keys stored in JSON."""
    return text_digest(text).hex()
