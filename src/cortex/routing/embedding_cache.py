"""A disk cache of text-root features, keyed by the sha256 of the text.

A frozen text root is a fixed function of the text, so its pooled features are computed once
per distinct text and reused by every training epoch, evaluation and retrain; only the router's
heads run per step. A cache belongs to one encoder *fingerprint* (weights, pooling, layer, length
limit) and lives in its own folder, so features of a different encoder can never be mixed in.

Layout: ``<root>/<fingerprint>/shard-*.safetensors``, each with ``keys (M, 32) uint8`` (sha256
digests) and ``vectors (M, D) float32``. Shards are written whole to a temp file and renamed, so a
reader sees complete shards only; two processes adding the same texts just store them twice.
"""

from __future__ import annotations

import os
import threading
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cortex._cache import text_digest
from cortex.hub.paths import cortex_home, validate_name


def default_cache_root() -> Path:
    """``$CORTEX_HOME/cache/router-features``."""
    return cortex_home() / "cache" / "router-features"


class EmbeddingCache:
    """Features ``(D,)`` per text for one encoder fingerprint; an in-memory dict backed by shards.

    Args:
        fingerprint: encoder id (a safe folder name, e.g. a hex digest).
        dim: feature width ``D``.
        root: cache root folder (default :func:`default_cache_root`); ``None`` with ``persist=False``
            keeps everything in memory.
        persist: write new features to disk in :meth:`flush`.
    """

    def __init__(self, fingerprint: str, dim: int, root: str | os.PathLike | None = None, persist: bool = True):
        validate_name(fingerprint, "encoder fingerprint")
        self.fingerprint, self.dim, self.persist = fingerprint, dim, persist
        self.folder = Path(root or default_cache_root()) / fingerprint
        self._mem: dict[bytes, np.ndarray] = {}
        self._pending: dict[bytes, np.ndarray] = {}
        self._lock = threading.Lock()
        if persist and self.folder.is_dir():
            self._load()

    def _load(self) -> None:
        from safetensors.numpy import load_file

        for shard in sorted(self.folder.glob("shard-*.safetensors")):
            try:
                data = load_file(str(shard))
                keys, vecs = data["keys"], data["vectors"]
                if vecs.ndim != 2 or vecs.shape[1] != self.dim or keys.shape != (len(vecs), 32):
                    raise ValueError(f"shapes {keys.shape}, {vecs.shape}; expected (M, 32), (M, {self.dim})")
            except Exception as e:  # a damaged cache file only costs recomputation: skip it, but say so
                warnings.warn(f"Skipping unreadable feature cache shard {shard} ({e}); delete it to silence this.",
                              stacklevel=2)
                continue
            for k, v in zip(keys, vecs):
                self._mem[k.tobytes()] = v

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, text: str) -> np.ndarray | None:
        return self._mem.get(text_digest(text))

    def put(self, text: str, vector: np.ndarray) -> None:
        v = np.asarray(vector, dtype=np.float32).reshape(self.dim)
        k = text_digest(text)
        with self._lock:
            self._mem[k] = v
            if self.persist:
                self._pending[k] = v

    def flush(self) -> None:
        """Write features added since the last flush as one new shard (atomic rename)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending or not self.persist:
            return
        from safetensors.numpy import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        keys = np.stack([np.frombuffer(k, dtype=np.uint8) for k in pending])
        vecs = np.stack(list(pending.values())).astype(np.float32)
        name = f"shard-{uuid.uuid4().hex}.safetensors"
        tmp = self.folder / f".{name}.tmp"
        save_file({"keys": keys, "vectors": vecs}, str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / name)

    def features(
        self, texts: Sequence[str], compute: Callable[[list[str]], np.ndarray], batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """``(N, D)`` features of ``texts``: cached ones looked up, the rest computed in batches.

        ``compute(list_of_texts) -> (n, D)`` runs the encoder; new texts are computed longest-first
        in batches (less padding) and flushed to disk at the end. ``progress(done, todo)`` is called
        after each batch.
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[bytes, list[int]] = {}
        first_text: dict[bytes, str] = {}
        for i, t in enumerate(texts):
            k = text_digest(t)
            v = self._mem.get(k)
            if v is None:
                missing.setdefault(k, []).append(i)
                first_text.setdefault(k, t)
            else:
                out[i] = v
        todo = sorted(missing, key=lambda k: -len(first_text[k]))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            vecs = np.asarray(compute([first_text[k] for k in chunk]), dtype=np.float32)
            for k, v in zip(chunk, vecs):
                self.put(first_text[k], v)
                out[missing[k]] = v
            if progress is not None:
                progress(min(start + batch_size, len(todo)), len(todo))
        self.flush()
        return out
