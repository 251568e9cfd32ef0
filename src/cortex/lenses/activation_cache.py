"""A disk cache of pooled activations: each sentence goes through the model once per (model, pool, layer).

Layout under ``$CORTEX_HOME/cache/activations``::

    <model-fingerprint>/<pool>-<max_length>/layer<k>/
        index.json                 # {sha256(text) hex: [shard, row]}
        shard-<id>.safetensors     # {"h": (n, d) float32}

Shards are written to a temp file and renamed, then the index is replaced atomically under a file
lock, so a crash leaves either the old cache or the new one. A fingerprint that changes (another model
or revision) simply misses.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from cortex._cache import text_key
from cortex.errors import InputError
from cortex.hub.paths import cortex_home, safe_join, validate_name
from cortex.hub.registry import atomic_write_text
from cortex.lenses.capture import encode_texts


class ActivationStore:
    """Pooled activations cached on disk; :meth:`encode` returns ``{layer: (len(texts), d)}`` float32."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else cortex_home() / "cache" / "activations"

    def _folder(self, fingerprint: str, pool: str, max_length: int, layer: int) -> Path:
        validate_name(fingerprint, "model fingerprint")
        folder = safe_join(self.root, f"{fingerprint}/{pool}-{max_length}/layer{layer}")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @staticmethod
    def _read_index(folder: Path) -> dict[str, list[Any]]:
        path = folder / "index.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {}  # a damaged index only costs a recompute

    def _lookup(self, folder: Path, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        index = self._read_index(folder)
        by_shard: dict[str, list[tuple[str, int]]] = {}
        for k in keys:
            if k in index:
                shard, row = index[k]
                by_shard.setdefault(shard, []).append((k, int(row)))
        found: dict[str, torch.Tensor] = {}
        for shard, items in by_shard.items():
            path = folder / shard
            if not path.is_file():
                continue
            h = load_file(str(path))["h"]
            for k, row in items:
                found[k] = h[row]
        return found

    def _write(self, folder: Path, keys: Sequence[str], h: torch.Tensor) -> None:
        from safetensors.torch import save_file

        shard = f"shard-{uuid.uuid4().hex[:12]}.safetensors"
        tmp = folder / f".{shard}.tmp"
        save_file({"h": h.contiguous()}, str(tmp))
        os.replace(tmp, folder / shard)
        with FileLock(str(folder / ".lock")):
            index = self._read_index(folder)
            for row, k in enumerate(keys):
                index[k] = [shard, row]
            atomic_write_text(folder / "index.json", json.dumps(index))

    def encode(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        blocks: Sequence[torch.nn.Module],
        fingerprint: str,
        texts: Sequence[str],
        layers: Sequence[int],
        *,
        pool: str = "mean",
        max_length: int = 128,
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> dict[int, torch.Tensor]:
        """Activations of ``texts``; only texts missing from the cache at some layer run through the model."""
        if not texts:
            raise InputError("No texts to encode; pass at least one string.")
        n_blocks = len(blocks)
        layer_list = sorted(set(int(i) % n_blocks for i in layers))
        unique = list(dict.fromkeys(texts))
        keys = [text_key(t) for t in unique]
        folders = {i: self._folder(fingerprint, pool, max_length, i) for i in layer_list}
        cached = {i: self._lookup(folders[i], keys) for i in layer_list}
        missing = [t for t, k in zip(unique, keys) if any(k not in cached[i] for i in layer_list)]
        if progress is not None and len(unique) > len(missing):
            progress(len(unique) - len(missing))
        if missing:
            fresh = encode_texts(model, tokenizer, blocks, missing, layer_list, pool=pool,
                                 batch_size=batch_size, max_length=max_length, progress=progress)
            miss_keys = [text_key(t) for t in missing]
            for i in layer_list:
                self._write(folders[i], miss_keys, fresh[i])
                cached[i].update(zip(miss_keys, fresh[i]))
        out = {}
        for i in layer_list:
            rows = torch.stack([cached[i][k] for k in keys])
            position = {t: r for r, t in enumerate(unique)}
            out[i] = rows[torch.tensor([position[t] for t in texts])]
        return out
