"""Where each probe's weights live while a detector runs: hot, warm, tepid or cold.

- **hot**: inside a :class:`~cortex.lenses.bank.BatchedLensBank`, scored every token; the cache keeps the
  probe's original tensors beside it (a bank holds LayerNorm-folded weights), to move it down later;
- **warm**: tensors on the scoring device, ready to add to a bank without a copy from host memory;
- **tepid**: tensors in CPU memory (pinned when CUDA is available, so the copy up is asynchronous);
- **cold**: only in the lens pack's safetensors file, read row by row when needed.

Warm and tepid are LRU-ordered with budgets in MB; what overflows warm drops to tepid, what overflows
tepid drops to cold (it is always on disk). Hit counters say which tier served each fetch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
import torch

from cortex.errors import ConfigError
from cortex.lenses.lens_pack import LensPack

Key = tuple[int, str]  # (model layer, concept)
TIERS = ("hot", "warm", "tepid", "cold")


def _nbytes(t: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in t.values())


class TieredProbeCache:
    """Per-probe tensors ``{name: (…)}`` of one lens pack, served from the fastest tier that holds them."""

    def __init__(self, pack: LensPack, *, device: str | torch.device = "cpu", warm_mb: float = 64.0,
                 tepid_mb: float = 256.0):
        if warm_mb < 0 or tepid_mb < 0:
            raise ConfigError(f"Cache budgets must be >= 0 MB (got warm={warm_mb}, tepid={tepid_mb}).")
        self.pack = pack
        self.device = torch.device(device)
        self.budget = {"warm": int(warm_mb * 2**20), "tepid": int(tepid_mb * 2**20)}
        self.tiers: dict[str, OrderedDict[Key, dict[str, torch.Tensor]]] = {"warm": OrderedDict(), "tepid": OrderedDict()}
        self.hot: dict[Key, dict[str, torch.Tensor]] = {}
        self.used = {"warm": 0, "tepid": 0}
        self.hits = dict.fromkeys(TIERS, 0)
        self._pin = torch.cuda.is_available()

    def _read_cold(self, layer: int, concepts: Sequence[str]) -> list[dict[str, torch.Tensor]]:
        """Rows of ``concepts`` from the layer's probe file (a lazily loaded pack reads only those rows)."""
        return self.pack.layers[layer].rows(concepts)

    def fetch(self, layer: int, concepts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Stacked tensors ``(k, …)`` of ``concepts`` at ``layer``, which become hot (leave warm/tepid)."""
        rows: dict[str, dict[str, torch.Tensor]] = {}
        cold = []
        for c in concepts:
            key = (layer, c)
            if key in self.hot:
                self.hits["hot"] += 1
                rows[c] = self.hot[key]
                continue
            for tier in ("warm", "tepid"):
                t = self.tiers[tier].pop(key, None)
                if t is not None:
                    self.used[tier] -= _nbytes(t)
                    self.hits[tier] += 1
                    rows[c] = t
                    break
            else:
                cold.append(c)
        if cold:
            self.hits["cold"] += len(cold)
            rows.update(zip(cold, self._read_cold(layer, cold)))
        for c in concepts:
            rows[c] = {k: v.to(self.device, non_blocking=True) for k, v in rows[c].items()}
            self.hot[(layer, c)] = rows[c]
        return {k: torch.stack([rows[c][k] for c in concepts]) for k in rows[concepts[0]]}

    def note_hot(self, n: int = 1) -> None:
        """Count probes that were already in a bank when asked for."""
        self.hits["hot"] += n

    def release(self, layer: int, concepts: Sequence[str]) -> None:
        """Probes leaving a bank go warm (LRU); overflow goes tepid, then cold."""
        for c in concepts:
            t = self.hot.pop((layer, c), None)
            if t is not None:
                self._put("warm", (layer, c), t)

    def _put(self, tier: str, key: Key, t: dict[str, torch.Tensor]) -> None:
        size = _nbytes(t)
        if size > self.budget[tier]:
            if tier == "warm":
                self._put("tepid", key, t)
            return
        self.tiers[tier][key] = t
        self.used[tier] += size
        while self.used[tier] > self.budget[tier]:
            old_key, old = self.tiers[tier].popitem(last=False)
            self.used[tier] -= _nbytes(old)
            if tier == "warm":
                cpu = {k: v.cpu().pin_memory() if self._pin else v.cpu() for k, v in old.items()}
                self._put("tepid", old_key, cpu)

    def stats(self) -> dict[str, dict[str, int]]:
        """``{"hits": {tier: n}, "entries": {tier: n}, "bytes": {tier: n}, "budget": {tier: n}}``."""
        hot_bytes = sum(_nbytes(t) for t in self.hot.values())
        return {"hits": dict(self.hits), "entries": {"hot": len(self.hot), **{t: len(v) for t, v in self.tiers.items()}},
                "bytes": {"hot": hot_bytes, **self.used}, "budget": dict(self.budget)}
